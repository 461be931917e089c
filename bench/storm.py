"""Reconnect storm: every held Ping's connection drops at once and comes back.

Approach. A network blip (a load balancer failing over, a carrier's NAT
flushed) drops every phone's connection at once; the phones reconnect with a
new TLS connection each and send their Ping again, within seconds of each
other. The bench holds ``pings`` Pings through the gateway (TLS by default,
``generators`` load generator processes, job ``hold``), then sends every
generator ``storm``: each drops all its connections and reopens them all at
once, no ramp. Measured:

* the storm's time: from the drop until the gateway's
  ``sentry_held_long_polls`` gauge shows every Ping held again;
* the gateway's CPU over the storm, per Ping (the old connection's end, the
  handshake, the request and its upstream leg);
* the handshake apart: afterwards one generator (job ``handshakes``) opens
  and closes ``handshakes`` TLS connections without a request, and the
  gateway's CPU per connection is the handshake's share; the rest of the
  storm's per-Ping CPU is the Ping's setup.

Who reconnects (``generator``): the Python generators themselves
(``python``; with ``resume`` each offers one saved session on every new
connection), wrk (``wrk``: a full handshake each, the Python generators only
drop), or a fleet of phones in C (``phones``, ``bench/phones.c``: it holds
the Pings itself, drops and reconnects them, and with ``resume`` every phone
offers the last ticket its own connection received, as a phone's TLS stack
does; the Python generators only prime).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import mailhost, wrkgen
from bench import phones as c_phones
from bench.eas_mix import Session, held_ping
from bench.held import _held, _node_cpu, _node_rss, _ramp, _start, _stop, nofile_warning
from bench.proc import BenchError, start
from bench.profile import profiled
from bench.servers import metric
from bench.stats import fmt
from bench.workers import database

__all__ = ["StormOptions", "run_storm", "storm_markdown"]


@dataclass
class StormOptions:
    pings: int = 2000
    tls: bool = True
    generators: int = 2
    ramp_rate: float = 300.0  # new TLS Pings per second before the storm (about 1 core)
    heartbeat: int = 900  # long: nothing but the storm ends them
    handshakes: int = 1000
    event_loop: str = "asyncio"
    timeout: float = 120.0  # the storm must be over by then
    workers: int = 1  # gateway.workers; more than 1 needs a PostgreSQL store (dsn)
    dsn: str | None = None  # a PostgreSQL server: the store is a database made for the run
    resume: bool = False  # the phones offer a saved TLS session when they reconnect
    generator: str = "python"  # who reconnects: the load generators, "wrk" or "phones" (C)
    backend: str = "demo"  # the mail server: the demo backend, or "c" (bench/mailhost.c)


POLL_S = 0.2
"""How often the storm reads the gateway's gauges: the storm's time is known
to this much."""


def _wait_held(
    setup: Any,
    want: int,
    since: float,
    gone0: float,
    timeout: float,
    holder: wrkgen.Holder | c_phones.Phones | None = None,
) -> float:
    """Seconds from ``since`` until the gateway has seen every old connection
    go (its disconnect counter) and holds ``want`` Pings again."""
    gw = setup.gateway
    deadline = since + timeout
    while time.monotonic() < deadline:
        gw.proc.check_alive()
        if holder is not None:
            holder.check_alive()
        try:
            text = gw.metrics_text()
        except OSError:  # the loop is busy with the storm: /metrics answers late
            time.sleep(0.05)
            continue
        gone = metric(text, "sentry_client_disconnects_total", command="Ping") - gone0
        held = metric(text, "sentry_held_long_polls", command="Ping")
        if held >= want and gone >= want:
            return time.monotonic() - since
        # a scrape costs the gateway (with workers it merges every worker's
        # metric files, and reads /proc): 20 a second took 6 % of its CPU
        time.sleep(POLL_S)
    raise BenchError(f"after {timeout:.0f} s only {_held(gw)} of {want} Pings held again")


def _wait_drained(setup: Any, timeout: float) -> None:
    """Until the gateway holds no Ping (wrk's connections closed)."""
    deadline = time.monotonic() + timeout
    while _held(setup.gateway) > 0:
        if time.monotonic() > deadline:
            raise BenchError(f"{_held(setup.gateway)} Pings still held {timeout:.0f} s after wrk")
        time.sleep(0.1)
    time.sleep(0.5)  # the backend legs' ends


def listen_overflows() -> int:
    """The kernel's count of connections dropped at a full accept queue
    (``TcpExt: ListenOverflows`` in ``/proc/net/netstat``, the whole
    machine's; -1 where there is none). Each is a phone whose SYN is retried
    after 1 s."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return -1
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            fields = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            return int(fields.get("ListenOverflows", -1))
    return -1


def _disconnects(gw: Any) -> float:
    return metric(gw.metrics_text(), "sentry_client_disconnects_total", command="Ping")


def _others_cpu(setup: Any, c_gen: wrkgen.Holder | c_phones.Phones | None) -> dict[str, float]:
    """CPU seconds of the Python load generators, the C one (wrk or the
    phones) and the backend, which share the machine."""
    return {
        "generators": sum(g.cpu() for g in setup.gens),
        "c": c_gen.cpu() if c_gen is not None else 0.0,
        "backend": setup.backend.proc.cpu(),
    }


def _handshake_cpu(setup: Any, opts: StormOptions, work: Path) -> dict[str, float]:
    gw = setup.gateway
    job = {
        "mode": "handshakes",
        "host": gw.host,
        "port": gw.port,
        "count": opts.handshakes,
        "concurrency": 50,
        "resume": opts.resume,
    }
    proc = start("handshakes", [sys.executable, "-m", "bench.loadgen"], work, pipes=True)
    try:
        proc.send({"job": job})
        proc.receive(60)  # ready
        cpu0 = _node_cpu(setup)
        proc.send({"cmd": "go"})
        result = proc.receive(opts.timeout)
        cpu = _node_cpu(setup) - cpu0
    finally:
        proc.stop()
    done = opts.handshakes - sum(result.get("errors", {}).values())
    return {
        "handshakes": done,
        "resumed": result.get("resumed", 0),
        "seconds": result["seconds"],
        "cpu_per_handshake_ms": cpu / max(1, done) * 1e3,
    }


def run_storm(opts: StormOptions, work: Path) -> dict[str, Any]:
    """Hold N Pings, drop them all at once, time until all are held again."""
    work = work.resolve()
    sessions = [Session(f"STORM{i:06d}", f"user{i:06d}") for i in range(opts.pings)]
    print(
        f"storm: {opts.pings:,} held Pings, TLS {'on' if opts.tls else 'off'}, "
        f"{opts.generators} generators, event loop {opts.event_loop}, "
        f"{opts.workers} worker(s){' on PostgreSQL' if opts.dsn else ''}",
        flush=True,
    )
    if opts.workers > 1 and opts.dsn is None:
        raise BenchError("--workers above 1 needs a PostgreSQL store: --dsn")
    if opts.generator == "wrk" and (opts.resume or wrkgen.available() is None):
        raise BenchError("--generator wrk needs wrk installed, and cannot --resume")
    if opts.generator == "phones" and c_phones.available() is not None:
        raise BenchError(f"--generator phones: {c_phones.available()}")
    if opts.backend == "c" and mailhost.available() is not None:
        raise BenchError(f"--backend c: {mailhost.available()}")
    per_process = -(-opts.pings // max(1, opts.workers))
    warning = nofile_warning(per_process)
    databases, db = database(opts.dsn) if opts.dsn else (None, None)
    try:
        return _storm(opts, work, sessions, db, warning)
    finally:
        if databases is not None:
            asyncio.run(databases.drop_all())


def _storm(
    opts: StormOptions, work: Path, sessions: list[Session], db: str | None, warning: str | None
) -> dict[str, Any]:
    setup = _start(
        work,
        sessions,
        heartbeat=opts.heartbeat,
        ramp_rate=opts.ramp_rate,
        tls=opts.tls,
        generators=opts.generators,
        event_loop=opts.event_loop,
        workers=opts.workers,
        dsn=db,
        resume=opts.resume,
        ramp=opts.generator != "phones",
        backend=opts.backend,
    )
    gw = setup.gateway
    where = f"{gw.host}:{gw.port}"
    phones: c_phones.Phones | None = None
    holder: wrkgen.Holder | None = None
    try:
        if opts.generator == "phones":  # they hold the Pings: the generators only prime
            requests = [held_ping(s, where, opts.heartbeat) for s in sessions]
            phones = c_phones.Phones(
                gw.host, gw.port, requests, work / "phones",
                tls=opts.tls, resume=opts.resume, rate=opts.ramp_rate,
            )  # fmt: skip
        ramp = _ramp(setup, opts.pings, opts.ramp_rate, phones)
        held = int(ramp["held"])  # the storm must bring back as many as were held
        if held < 0.95 * opts.pings:
            raise BenchError(f"only {held} of {opts.pings} Pings held before the storm")
        if opts.generator == "wrk":  # its requests written ahead
            requests = [held_ping(s, where, opts.heartbeat) for s in sessions]
            holder = wrkgen.Holder(
                gw.host, gw.port, requests, work / "wrk", tls=opts.tls, seconds=opts.timeout + 60
            )
        gone0 = _disconnects(gw)
        rss0, cpu0 = _node_rss(setup), _node_cpu(setup)
        others0 = _others_cpu(setup, holder or phones)
        overflows0 = listen_overflows()
        with profiled(gw.proc.pid, "storm", subprocesses=opts.workers > 1):
            t0 = time.monotonic()
            if phones is not None:
                sent = [phones.storm(opts.timeout)]
            elif holder is not None:
                # the Python generators drop their connections, wrk opens them all again
                for g in setup.gens:
                    g.send({"cmd": "drop"})
                sent = [g.receive(opts.timeout) for g in setup.gens]
                holder.start()
            else:
                for g in setup.gens:
                    g.send({"cmd": "storm"})
                sent = [g.receive(opts.timeout) for g in setup.gens]
            seconds = _wait_held(setup, held, t0, gone0, opts.timeout, holder or phones)
        cpu = _node_cpu(setup) - cpu0
        overflows = listen_overflows() - overflows0 if overflows0 >= 0 else None
        others = {k: v - others0[k] for k, v in _others_cpu(setup, holder or phones).items()}
        rss1 = _node_rss(setup)
        results: list[dict[str, Any]] = []
        if phones is not None:
            results.append(phones.stop())  # the storm's counts; the gateway ends their Pings
            phones = None
            _wait_drained(setup, opts.timeout)
        if holder is not None:
            holder.stop()  # its connections close: the gateway ends their Pings,
            holder = None  # which must not count as the handshakes' CPU below
            _wait_drained(setup, opts.timeout)
        handshake = _handshake_cpu(setup, opts, work) if opts.tls else None
        for g in setup.gens:
            g.send({"cmd": "stop"})
        results += [g.receive(60) for g in setup.gens]
    finally:
        if holder is not None:
            holder.stop()
        if phones is not None:
            phones.kill()
        _stop(setup)
    per_ping = cpu / held * 1e3
    out: dict[str, Any] = {
        "scenario": "storm",
        "options": {**vars(opts), "dsn": "(given)" if opts.dsn else None},
        "warning": warning,
        "held_before": held,
        "ramp_connect_errors": ramp["connect_errors"],
        "ramp_seconds": ramp["seconds_to_all_held"],
        "storm_seconds": seconds,
        "storm_send_seconds": max(s["seconds"] for s in sent),
        "listen_overflows": overflows,
        "retries": sum(r.get("retries", 0) for r in results),
        "resumed": sum(r.get("resumed", 0) for r in results),
        "errors": [r.get("errors", {}) for r in results],
        "gateway_cpu_s": cpu,
        # the machine is shared: what the generators and the backend took meanwhile
        "generators_cpu_s": others["generators"] + others["c"],
        "wrk_cpu_s": others["c"] if opts.generator == "wrk" else 0.0,
        "phones_cpu_s": others["c"] if opts.generator == "phones" else 0.0,
        "backend_cpu_s": others["backend"],
        "cpus": os.cpu_count(),
        "cpu_per_ping_ms": per_ping,
        "gateway_rss_mib": [rss0 / 2**20, rss1 / 2**20],
        "handshake": handshake,
    }
    if handshake is not None:
        out["setup_cpu_per_ping_ms"] = per_ping - handshake["cpu_per_handshake_ms"]
    return out


def storm_markdown(r: dict[str, Any]) -> str:
    o, h = r["options"], r["handshake"]
    hs = "-" if h is None else f"{h['cpu_per_handshake_ms']:.2f} ms"
    setup = "-" if h is None else f"{r['setup_cpu_per_ping_ms']:.2f} ms"
    lines = [
        "| held Pings | TLS | resumed | loop | workers | all held again after "
        "| gateway CPU per Ping | of it: handshake | setup | retries |",
        "| ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {fmt(r['held_before'])} | {'on' if o['tls'] else 'off'} "
        f"| {fmt(r.get('resumed', 0))} | {o['event_loop']} "
        f"| {o.get('workers', 1)}{' (PostgreSQL)' if o.get('dsn') else ''} "
        f"| {r['storm_seconds']:.2f} s | {r['cpu_per_ping_ms']:.2f} ms | {hs} | {setup} "
        f"| {fmt(r['retries'])} |",
    ]
    if o.get("generator") == "wrk":
        lines += ["", "The storm's reconnects came from wrk (C), one connection per phone."]
    if o.get("generator") == "phones":
        offered = "each offering its own last session ticket" if o["resume"] else "full handshakes"
        lines += ["", f"The Pings were held and reconnected by phones in C ({offered})."]
    if o.get("backend") == "c":
        lines += ["", "The mail server was bench/mailhost.c (C), not the demo backend."]
    if "generators_cpu_s" in r:
        lines += [
            "",
            f"CPU during the storm: gateway {r['gateway_cpu_s']:.1f} s, load generators "
            f"{r['generators_cpu_s']:.1f} s{_of_it_c(r)}, backend {r['backend_cpu_s']:.1f} s "
            f"over {r['storm_seconds']:.1f} s of wall time on {r.get('cpus')} cores.",
            *_overflow_line(r),
        ]
    if r.get("warning"):
        lines += ["", f"Warning: {r['warning']}."]
    return "\n".join(lines)


def _of_it_c(r: dict[str, Any]) -> str:
    """The C generator's share of the generators' CPU, named whenever one ran
    (a short storm may take it none: CPU counts in 10 ms ticks)."""
    generator = r["options"].get("generator")
    if generator == "wrk":
        key, label, rest = "wrk_cpu_s", "wrk", "the Python generators' drop"
    elif generator == "phones":
        key, label, rest = "phones_cpu_s", "the C phones", "the Python generators"
    else:
        return ""
    c = r.get(key) or 0.0
    return f" ({label} {c:.1f} s, {rest} {r['generators_cpu_s'] - c:.1f} s)"


def _overflow_line(r: dict[str, Any]) -> list[str]:
    n = r.get("listen_overflows")
    if n is None:
        return []
    return [
        "",
        f"Connections the kernel dropped at a full accept queue during the storm "
        f"(TcpExt ListenOverflows, the whole machine): {fmt(n)}.",
    ]
