"""Held Pings and block propagation: N Pings held open through the gateway.

Approach. One demo backend and one gateway, each in its own process, and
``generators`` load generator processes (job ``hold``), each holding its
share of the Pings, one connection per Ping, as phones do. Every
association is primed first with one FolderSync, so the memory measured
afterwards is that of the held requests, not of the association rows.

* ``held-pings``: RSS and CPU of the gateway are read after priming and
  again once the gateway's ``sentry_held_long_polls`` gauge shows all N held:
  RSS per held Ping = delta RSS / N, CPU per new Ping = delta CPU / N. Then
  the bench waits for the heartbeat and checks that every Ping was answered
  (HTTP 200, Ping Status 1) at its heartbeat.
* ``block``: half of the sessions have DeviceType ``BenchBlock``; once all
  are held, one bulk action of the admin API
  (``POST /api/associations/actions/block`` with the filter
  ``{"device_type": "BenchBlock"}``) blocks them. The time from sending the
  action to each answer is the propagation time; every blocked Ping must get
  Ping Status 129 and every other Ping must still be held.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.eas_mix import Session
from bench.mailhost import MailGroup, start_mailhosts
from bench.phones import Phones
from bench.proc import BenchError, Proc, raise_nofile, start, tree_cpu, tree_rss
from bench.profile import profiled
from bench.servers import GatewayProc, ServerProc, metric, start_backend, start_gateway
from bench.stats import fmt, summary

__all__ = [
    "BlockOptions",
    "HeldOptions",
    "block_markdown",
    "held_markdown",
    "run_block",
    "run_held_pings",
]

BLOCK_TYPE = "BenchBlock"


@dataclass
class HeldOptions:
    pings: int = 10_000
    heartbeat: int = 90
    ramp_rate: float = 500.0
    tls: bool = False
    generators: int = 1
    local_hosts: int = 1  # 127.0.0.1 .. 127.0.0.<n>: source addresses of the generators
    backend_hosts: int = 1  # the backend listens on 127.0.0.1 .. <n>; the pool lists each
    event_loop: str = "asyncio"  # the gateway's gateway.event_loop
    workers: int = 1  # gateway.workers; more than 1 needs a PostgreSQL store (dsn)
    dsn: str | None = None  # a PostgreSQL server: the store is a database made for the run
    backend: str = "demo"  # the mail server: the demo backend, or "c" (bench/mailhost.c)


@dataclass
class BlockOptions:
    pings: int = 1000
    blocked: int = 500
    tls: bool = False
    ramp_rate: float = 500.0
    heartbeat: int = 600  # long: only the block may answer them
    event_loop: str = "asyncio"


@dataclass
class _Setup:
    backend: ServerProc | MailGroup
    gateway: GatewayProc
    gens: list[Proc]
    outs: list[Path]
    parts: list[list[Session]]


def _hosts(n: int) -> list[str]:
    return [f"127.0.0.{i}" for i in range(1, max(1, n) + 1)]


def _start(
    work: Path,
    sessions: list[Session],
    *,
    heartbeat: int,
    ramp_rate: float,
    tls: bool,
    generators: int = 1,
    local_hosts: int = 1,
    backend_hosts: int = 1,
    event_loop: str = "asyncio",
    workers: int = 1,
    dsn: str | None = None,
    resume: bool = False,
    ramp: bool = True,
    backend: str = "demo",
) -> _Setup:
    """The backend, the gateway (with SQLite; or ``workers`` processes on the
    PostgreSQL database ``dsn``) and the load generators, primed. Without
    ``ramp`` the generators only prime: ``bench.phones`` holds the Pings.
    ``backend``: the demo backend, or ``c`` (``bench/mailhost.c``: Pings held
    ``heartbeat`` seconds for next to no CPU, one process per backend address)."""
    hosts = _hosts(backend_hosts)
    mail: ServerProc | MailGroup
    if backend == "c":  # one process per address: each its own descriptor limit
        mail = start_mailhosts(work / "backend", tuple(hosts), hold=heartbeat)
        servers = mail.urls
    else:
        mail = start_backend(work / "backend", len(sessions), hosts=tuple(hosts))
        servers = [f"http://{h}:{mail.port}" for h in hosts]
    if dsn is not None:
        from bench.workers import start_node  # it imports this module

        gateway = start_node(work / "gateway", servers, dsn, workers, tls=tls)
    else:
        gateway = start_gateway(work / "gateway", servers, tls=tls, event_loop=event_loop)
    setup = _Setup(mail, gateway, [], [], [])
    k = max(1, generators)
    for g in range(k):
        part = sessions[g::k]
        out = work / f"hold-gen{g}.json"
        job = {
            "mode": "hold",
            "host": setup.gateway.host,
            "port": setup.gateway.port,
            "tls": tls,
            "resume": resume,  # offer a saved TLS session on new connections
            "ramp": ramp,
            "sessions": [[s.device_id, s.user, s.device_type] for s in part],
            "heartbeat": heartbeat,
            "ramp_rate": ramp_rate / k,
            "local_hosts": _hosts(local_hosts) if local_hosts > 1 else [],
            "deadline": heartbeat + 60,
            "out": str(out),
        }
        proc = start(f"hold-gen{g}", [sys.executable, "-m", "bench.loadgen"], work, pipes=True)
        proc.send({"job": job})
        setup.gens.append(proc)
        setup.outs.append(out)
        setup.parts.append(part)
    return setup


def _stop(setup: _Setup) -> None:
    for g in setup.gens:
        g.stop()
    setup.gateway.proc.stop()
    setup.backend.proc.stop()


def _held(gateway: GatewayProc) -> int:
    return int(metric(gateway.metrics_text(), "sentry_held_long_polls", command="Ping"))


def _ramp(
    setup: _Setup, pings: int, ramp_rate: float, phones: Phones | None = None
) -> dict[str, Any]:
    """go -> all sent -> all held (or no longer growing); the gateway's CPU
    and RSS. ``phones``: they open the Pings, the generators only primed."""
    # first sights went at about 105 a second on 12 workers sharing PostgreSQL's
    # write lock on two cores (2026-12-05): a timeout against a hang, not a pace
    primed = [g.receive(max(120.0, pings / 20)) for g in setup.gens]
    prime_errors = sum(sum(p.get("errors", {}).values()) for p in primed)
    # the generators prime at once (each its share, 32 connections): the slowest
    # one's time is how long the node took to see every association first
    prime_seconds = max(float(p.get("seconds", 0.0)) for p in primed)
    time.sleep(1.0)  # let the priming writes settle
    rss0, cpu0, brss0 = _node_rss(setup), _node_cpu(setup), setup.backend.proc.rss()
    trims0 = metric(setup.gateway.metrics_text(), "sentry_heap_trims_total")
    t0 = time.monotonic()
    for g in setup.gens:
        g.send({"cmd": "go"})
    if phones is not None:
        phones.ramp()
    samples = _sample_until_held(setup.gateway, pings, pings / ramp_rate)
    t_held = time.monotonic()
    cpu1, brss1 = _node_cpu(setup), setup.backend.proc.rss()
    held, rss1 = samples[-1]
    sent = [g.receive(120) for g in setup.gens]
    if phones is not None:
        sent.append(phones.sent(120))
    return {
        "prime_errors": prime_errors,
        "prime_seconds": prime_seconds,
        "first_sights_per_s": pings / prime_seconds if prime_seconds > 0 else 0.0,
        "connect_errors": sum(s["connect_errors"] for s in sent),
        "ramp_seconds": max(s["seconds"] for s in sent),
        "seconds_to_all_held": t_held - t0,
        "held": held,
        "gateway_rss_before_mib": rss0 / 2**20,
        "gateway_rss_held_mib": rss1 / 2**20,
        "rss_per_ping_kib": (rss1 - rss0) / max(1, held) / 1024,
        "backend_rss_per_ping_kib": (brss1 - brss0) / max(1, held) / 1024,
        "gateway_cpu_ramp_s": cpu1 - cpu0,
        "cpu_per_new_ping_ms": (cpu1 - cpu0) / max(1, held) * 1e3,
        "t_held": t_held,
        "heap_trims_before": trims0,
        "rss_samples": [[n, (rss - rss0) / 2**20] for n, rss in samples],
    }


SETTLE_S = 5.0
"""Seconds after the last Ping was held at which the RSS is read again: a
node holds its Pings for many minutes, and once a burst of new connections
has ended the gateway gives the C heap's free memory back
(``gateway.connections.heap_trim_after``, within about three seconds)."""


def _settled(setup: _Setup, ramp: dict[str, Any]) -> dict[str, Any]:
    """The gateway's RSS per held Ping ``SETTLE_S`` after all were held, and
    the heap trims it made since the ramp began."""
    time.sleep(max(0.0, ramp["t_held"] + SETTLE_S - time.monotonic()))
    rss = _node_rss(setup)
    rss0 = ramp["gateway_rss_before_mib"] * 2**20
    trims = metric(setup.gateway.metrics_text(), "sentry_heap_trims_total")
    return {
        "gateway_rss_settled_mib": rss / 2**20,
        "rss_per_ping_settled_kib": (rss - rss0) / max(1, ramp["held"]) / 1024,
        "heap_trims": trims - ramp["heap_trims_before"],
    }


def _node_rss(setup: _Setup) -> int:
    """The gateway node's RSS: its process and, with workers, theirs."""
    return tree_rss(setup.gateway.proc.pid)


def _node_cpu(setup: _Setup) -> float:
    """The gateway node's CPU seconds: its process and, with workers, theirs."""
    return tree_cpu(setup.gateway.proc.pid)


def _sample_until_held(gateway: GatewayProc, want: int, ramp: float) -> list[tuple[int, int]]:
    """(held Pings, gateway RSS) every quarter second until all ``want`` are held,
    or until the count has not grown for 5 s after the ramp's planned end."""
    samples: list[tuple[int, int]] = []
    start = last_growth = time.monotonic()
    best = -1
    while True:
        gateway.proc.check_alive()
        held = _held(gateway)
        now = time.monotonic()
        if held > best:
            best, last_growth = held, now
            samples.append((held, tree_rss(gateway.proc.pid)))
        if held >= want or (now - start > ramp and now - last_growth > 5.0):
            return samples
        time.sleep(0.25)


def nofile_warning(pings: int) -> str | None:
    """A warning when the open-file limit cannot carry ``pings`` held Pings."""
    soft = raise_nofile()
    need = 2 * pings + 200  # the gateway: one socket to the device, one to the backend
    if soft >= need:
        return None
    return (
        f"RLIMIT_NOFILE is {soft:,} here (hard limit; raising it needs CAP_SYS_RESOURCE): "
        f"the gateway needs about {need:,} descriptors for {pings:,} held Pings and will "
        f"refuse connections beyond about {(soft - 200) // 2:,} (see bench/README.md)"
    )


def _outcomes(setup: _Setup) -> list[dict[str, Any]]:
    """Per session: sent/answered times, HTTP status and Ping Status."""
    rows = []
    for out, part in zip(setup.outs, setup.parts, strict=True):
        data = json.loads(out.read_text())
        for i, session in enumerate(part):
            rows.append(
                {
                    "session": session,
                    "sent": data["sent"][i],
                    "answered": data["answered"][i],
                    "http": data["http"][i],
                    "ping": data["ping"][i],
                }
            )
    return rows


def run_held_pings(opts: HeldOptions, work: Path) -> dict[str, Any]:
    """Ramp to N held Pings, measure, wait for the heartbeat, check every answer
    (with ``workers`` above 1, on a PostgreSQL database made for the run)."""
    work = work.resolve()
    if opts.workers > 1 and opts.dsn is None:
        raise BenchError("--workers above 1 needs a PostgreSQL store: --dsn")
    databases, db = (None, None)
    if opts.dsn is not None:
        from bench.workers import database  # it imports this module

        databases, db = database(opts.dsn)
    try:
        return _held_pings(opts, work, db)
    finally:
        if databases is not None:
            asyncio.run(databases.drop_all())


def _held_pings(opts: HeldOptions, work: Path, db: str | None) -> dict[str, Any]:
    sessions = [Session(f"HOLD{i:07d}", f"user{i:06d}") for i in range(opts.pings)]
    print(
        f"held-pings: {opts.pings:,} Pings, heartbeat {opts.heartbeat} s, "
        f"ramp {opts.ramp_rate:.0f}/s, TLS {'on' if opts.tls else 'off'}, "
        f"{opts.workers} worker(s){' on PostgreSQL' if db else ''}",
        flush=True,
    )
    setup = _start(
        work,
        sessions,
        heartbeat=opts.heartbeat,
        ramp_rate=opts.ramp_rate,
        tls=opts.tls,
        generators=opts.generators,
        local_hosts=opts.local_hosts,
        backend_hosts=opts.backend_hosts,
        event_loop=opts.event_loop,
        workers=opts.workers,
        dsn=db,
        backend=opts.backend,
    )
    warning = nofile_warning(-(-opts.pings // max(1, opts.workers)))
    if warning:
        print(f"  warning: {warning}", flush=True)
    try:
        ramp = _ramp(setup, opts.pings, opts.ramp_rate)
        print(
            f"  primed {opts.pings:,} first sights in {ramp['prime_seconds']:.1f} s "
            f"({ramp['first_sights_per_s']:,.0f} a second)",
            flush=True,
        )
        print(
            f"  held {ramp['held']:,}: {ramp['rss_per_ping_kib']:.1f} KiB RSS and "
            f"{ramp['cpu_per_new_ping_ms']:.2f} ms CPU per Ping in the gateway; "
            f"waiting {opts.heartbeat} s for the heartbeat",
            flush=True,
        )
        # (a heartbeat as short as the smoke test's answers the Pings first)
        settled = _settled(setup, ramp) if opts.heartbeat >= 3 * SETTLE_S else {}
        if settled:
            print(
                f"  {SETTLE_S:.0f} s later: {settled['rss_per_ping_settled_kib']:.1f} KiB RSS "
                f"per Ping (heap trims meanwhile: {settled['heap_trims']:.0f})",
                flush=True,
            )
        cpu_idle0 = _node_cpu(setup)
        results = [g.receive(opts.heartbeat + 180) for g in setup.gens]
        idle_cpu = _node_cpu(setup) - cpu_idle0
        rows = _outcomes(setup)
    finally:
        _stop(setup)
    after = [r["answered"] - r["sent"] for r in rows if r["answered"] and r["sent"] > 0]
    tolerance = max(5.0, opts.heartbeat * 0.05)
    on_time = sum(1 for a in after if opts.heartbeat - 1 <= a <= opts.heartbeat + tolerance)
    ok = sum(1 for r in rows if r["http"] == 200 and r["ping"] == 1)
    ramp.pop("t_held")
    return {
        "scenario": "held-pings",
        "options": {**vars(opts), "dsn": "(given)" if opts.dsn else None},
        "warning": warning,
        **ramp,
        **settled,
        "answered": sum(r["answered"] > 0 for r in rows),
        "answered_ok": ok,
        "answered_on_time": on_time,
        "on_time_window_s": [opts.heartbeat - 1, opts.heartbeat + tolerance],
        "answer_after_s": summary(after),
        "gateway_cpu_while_held_s": idle_cpu,
        "generator_errors": [r["errors"] for r in results],
    }


def held_markdown(r: dict[str, Any]) -> str:
    o = r["options"]
    a = r["answer_after_s"]
    lines = [
        "| held Pings | TLS | workers | RSS per Ping (gateway) | settled 5 s later "
        "| CPU per new Ping | ramp s | "
        "answered OK at heartbeat | answer after (p50 / max) | gateway RSS |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {fmt(r['held'])} | {'on' if o['tls'] else 'off'} | {o.get('workers', 1)} "
        f"| {r['rss_per_ping_kib']:.1f} KiB | {_settled_cell(r)} "
        f"| {r['cpu_per_new_ping_ms']:.2f} ms "
        f"| {r['ramp_seconds']:.1f} | {fmt(r['answered_on_time'])} of {fmt(o['pings'])} "
        f"({fmt(r['answered_ok'])} Status 1) | {a['p50']:.2f} / {a['max']:.2f} s "
        f"| {r['gateway_rss_before_mib']:.0f} -> {r['gateway_rss_held_mib']:.0f} MiB |",
    ]
    if o.get("backend") == "c":
        lines += [
            "",
            f"The mail server was bench/mailhost.c (C), one process per backend address "
            f"({o.get('backend_hosts', 1)}).",
        ]
    if r.get("warning"):
        lines += ["", f"Warning: {r['warning']}."]
    return "\n".join(lines)


def _settled_cell(r: dict[str, Any]) -> str:
    if "rss_per_ping_settled_kib" not in r:
        return "-"
    trims = int(r["heap_trims"])
    return f"{r['rss_per_ping_settled_kib']:.1f} KiB ({trims} heap trim{'s' * (trims != 1)})"


# -- block propagation ------------------------------------------------------------------


def _block(gateway: GatewayProc) -> tuple[float, float, dict[str, Any]]:
    """The bulk Block; return (sent at, answered at, JSON answer)."""
    body = json.dumps(
        {"filter": {"device_type": BLOCK_TYPE}, "note": "bench", "dry_run": False}
    ).encode()
    request = urllib.request.Request(
        gateway.admin_url + "/api/associations/actions/block",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {gateway.token}", "Content-Type": "application/json"},
    )
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            answer: dict[str, Any] = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise BenchError(f"bulk block failed: {exc.code} {exc.read()[:500]!r}") from None
    return t0, time.monotonic(), answer


def run_block(opts: BlockOptions, work: Path) -> dict[str, Any]:
    """Hold N Pings, block some with one bulk action, time each answer."""
    work = work.resolve()
    blocked = min(opts.blocked, opts.pings)
    sessions = [
        Session(f"BLK{i:07d}", f"user{i:06d}", BLOCK_TYPE if i < blocked else "iPhone")
        for i in range(opts.pings)
    ]
    print(f"block: {opts.pings:,} held Pings, {blocked:,} blocked by one bulk action", flush=True)
    setup = _start(
        work,
        sessions,
        heartbeat=opts.heartbeat,
        ramp_rate=opts.ramp_rate,
        tls=opts.tls,
        event_loop=opts.event_loop,
    )
    try:
        ramp = _ramp(setup, opts.pings, opts.ramp_rate)
        if ramp["held"] < opts.pings:
            raise BenchError(f"only {ramp['held']} of {opts.pings} Pings held")
        with profiled(setup.gateway.proc.pid, "block"):
            cpu0 = _node_cpu(setup)
            t_block, t_api, answer = _block(setup.gateway)
            remaining = _wait_held_down(setup.gateway, opts.pings - blocked, 30.0)
            block_cpu = _node_cpu(setup) - cpu0
        revocation = _revocation_histogram(setup.gateway.metrics_text())
        for g in setup.gens:
            with contextlib.suppress(BrokenPipeError):  # it ended by itself: all answered
                g.send({"cmd": "stop"})
        for g in setup.gens:
            g.receive(60)
        rows = _outcomes(setup)
    finally:
        _stop(setup)
    hit = [r for r in rows if r["session"].device_type == BLOCK_TYPE]
    others = [r for r in rows if r["session"].device_type != BLOCK_TYPE]
    delays = [r["answered"] - t_block for r in hit if r["answered"]]
    return {
        "scenario": "block",
        "options": vars(opts),
        "held": ramp["held"],
        "blocked": blocked,
        "api_seconds": t_api - t_block,
        "api_answer": {k: v for k, v in answer.items() if k in ("matched", "polls_ended")},
        "api_changed": len(answer.get("changed", [])),
        "answered": len(delays),
        "status_129": sum(1 for r in hit if r["http"] == 200 and r["ping"] == 129),
        "blocked_answers": dict(Counter(f"HTTP {r['http']} Status {r['ping']}" for r in hit)),
        "unblocked_still_held": sum(1 for r in others if not r["answered"]),
        "unblocked_total": len(others),
        "held_after_block": remaining,
        # the API call, the answers, closing the backend legs (and a few /metrics scrapes)
        "gateway_cpu_ms": block_cpu * 1e3,
        "propagation_ms": summary(delays, scale=1e3),
        # issue #14's measure: from the moment the API call returned
        "after_api_ms": summary([r["answered"] - t_api for r in hit if r["answered"]], scale=1e3),
        "gateway_revocation_histogram": revocation,
    }


def _wait_held_down(gateway: GatewayProc, want: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    held = _held(gateway)
    while held > want and time.monotonic() < deadline:
        time.sleep(0.05)
        held = _held(gateway)
    time.sleep(0.5)  # answers in flight reach the generator
    return _held(gateway)


def _revocation_histogram(text: str) -> dict[str, float]:
    return {
        "count": metric(text, "sentry_revocation_seconds_count"),
        "sum_s": metric(text, "sentry_revocation_seconds_sum"),
    }


def block_markdown(r: dict[str, Any]) -> str:
    p = r["propagation_ms"]
    after = r.get("after_api_ms", {}).get("p99", float("nan"))
    return "\n".join(
        [
            "| held Pings | blocked | bulk API call | answered | Status 129 | p50 | p99 | max | "
            "p99 after the call returned | others still held | gateway CPU |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            f"| {fmt(r['held'])} | {fmt(r['blocked'])} | {r['api_seconds'] * 1e3:.1f} ms "
            f"| {fmt(r['answered'])} | {fmt(r['status_129'])} | {p['p50']:.1f} ms "
            f"| {p['p99']:.1f} ms | {p['max']:.1f} ms | {after:.1f} ms "
            f"| {fmt(r['unblocked_still_held'])} of {fmt(r['unblocked_total'])} "
            f"| {r.get('gateway_cpu_ms', float('nan')):.0f} ms |",
        ]
    )
