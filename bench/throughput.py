"""Throughput: the same EAS mix against the backend directly, a bare
forwarder and the gateway, in one run, on one backend.

Approach. One demo backend process serves every target. For each target in
turn (direct, bare forwarder with TLS off and on, gateway with TLS off and on) the
server is started in its own process, then ``generators`` load generator
processes (``bench.loadgen``, job ``mix``) split the sessions and the
connections between them. For each concurrency level they connect and warm
up, and the bench reads the CPU counters of the server under test, of the
backend and of itself between ``go`` and the last ``result``. Requests per
second, latency percentiles (merged from the generators' raw latencies),
CPU seconds per process and requests per server core-second come out per
(target, level); the ratios gateway / bare forwarder and gateway / direct,
and the latency the gateway adds at the lowest level, come out per run. A
gateway with TLS is also compared with the bare forwarder serving TLS
(``bare-tls``: aiohttp's server over asyncio's TLS), its like for like: the
``vs bare`` ratios of a TLS gateway count TLS itself against it.

For *direct* the server under test is the backend itself; for the others the
backend's CPU is reported beside the server's, so the reader sees who used
the two cores.

``backend="c"`` (``--backend c``): the backend is ``bench/mailhost.c`` serving
the demo backend's recorded answers to the mix (``bench.mailhost.mix_answers``),
as the issue's own measurement put nginx behind the gateway. The demo backend
took a full core at 64 connections, so the server under test got 0.6-0.75 of
the other; with a backend that costs next to nothing it gets most of a core
and is measured saturated, as the per-core target means.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from array import array
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import mailhost
from bench.eas_mix import CYCLE, Session, make_sessions, users_of
from bench.proc import BenchError, Proc, start
from bench.profile import profiled
from bench.servers import GatewayProc, ServerProc, metric, start_backend, start_bare, start_gateway
from bench.stats import fmt, percentile

__all__ = ["TARGETS", "ThroughputOptions", "markdown", "measure_window", "run_throughput"]

TARGETS = ("direct", "bare", "bare-tls", "gateway", "gateway-tls")
# also measurable, on request (--targets): the gateway on uvloop's event loop, and
# the gateway of another checkout (--base-root, e.g. a worktree of an earlier commit)
EXTRA_TARGETS = ("gateway-uvloop", "gateway-tls-uvloop", "gateway-base", "gateway-tls-base")
GATEWAYS = ("gateway", "gateway-tls", *EXTRA_TARGETS)
LABELS = {
    "direct": "backend directly",
    "bare": "bare aiohttp forwarder",
    "bare-tls": "bare aiohttp forwarder (TLS on)",
    "gateway": "gateway (TLS off)",
    "gateway-tls": "gateway (TLS on)",
    "gateway-uvloop": "gateway (TLS off, uvloop)",
    "gateway-tls-uvloop": "gateway (TLS on, uvloop)",
    "gateway-base": "base gateway (TLS off)",
    "gateway-tls-base": "base gateway (TLS on)",
}


@dataclass
class ThroughputOptions:
    devices: int = 1000
    levels: tuple[int, ...] = (4, 64)
    duration: float = 10.0
    max_requests: int = 1_000_000
    generators: int = 1
    targets: tuple[str, ...] = TARGETS
    heartbeat: int = 5
    warmup_timeout: float = 180.0
    rounds: int = 1  # every target measured this many times, interleaved; ratios: medians
    base_root: Path | None = None  # the checkout of the gateway-base targets
    backend: str = "demo"  # or "c": bench/mailhost.c with the mix's recorded answers


def _start_target(
    name: str, backend: ServerProc, workdir: Path, base_root: Path | None = None
) -> ServerProc | None:
    if name == "direct":
        return None
    if name in ("bare", "bare-tls"):
        return start_bare(workdir / name, backend.url, tls=name == "bare-tls")
    loop = "uvloop" if name.endswith("-uvloop") else "asyncio"
    root = None
    if name.endswith("-base"):
        if base_root is None:
            raise BenchError(f"target {name} needs --base-root (another checkout)")
        root = base_root
    return start_gateway(workdir / name, [backend.url], tls=_tls(name), event_loop=loop, root=root)


def _tls(name: str) -> bool:
    return name.startswith("gateway-tls") or name == "bare-tls"


def _generators(
    target: ServerProc, tls: bool, sessions: list[Session], opts: ThroughputOptions, out: Path
) -> list[Proc]:
    gens = []
    k = max(1, opts.generators)
    for g in range(k):
        part = sessions[g::k]
        job = {
            "mode": "mix",
            "host": target.host,
            "port": target.port,
            "tls": tls,
            "sessions": [[s.device_id, s.user, s.device_type] for s in part],
            "levels": [max(1, math.ceil(level / k)) for level in opts.levels],
            "duration": opts.duration,
            "max_requests": max(1, opts.max_requests // k),
            "heartbeat": opts.heartbeat,
            "warmup_timeout": opts.warmup_timeout,
            "out": str(out / f"gen{g}"),
        }
        proc = start(f"loadgen{g}", [sys.executable, "-m", "bench.loadgen"], out, pipes=True)
        proc.send({"job": job})
        gens.append(proc)
    return gens


def _latencies(results: list[dict[str, Any]]) -> tuple[list[float], dict[str, list[float]]]:
    lat: array[float] = array("d")
    by_cmd: dict[str, list[float]] = {c: [] for c in CYCLE}
    for r in results:
        values, steps = array("d"), array("B")
        values.frombytes(Path(r["lat_file"]).read_bytes())
        steps.frombytes(Path(r["cmd_file"]).read_bytes())
        lat.extend(values)
        for v, s in zip(values, steps, strict=True):
            by_cmd[CYCLE[s]].append(v)
    return sorted(lat), {c: sorted(v) for c, v in by_cmd.items() if v}


def measure_window(
    name: str, level: int, gens: list[Proc], server: Proc, backend: Proc, opts: ThroughputOptions
) -> dict[str, Any]:
    """One measured window: wait for the generators' ``ready``, ``go``, collect."""
    readies = [g.receive(opts.warmup_timeout + 60) for g in gens]
    warm_failures: Counter[str] = Counter()
    for r in readies:
        warm_failures.update(r.get("warmup_failures", {}))
    with profiled(server.pid, f"throughput-{name}-{level}"):
        cpu0 = {"server": server.cpu(), "backend": backend.cpu()}
        for g in gens:
            g.send({"cmd": "go"})
        results = [g.receive(opts.duration + 120) for g in gens]
    cpu1 = {"server": server.cpu(), "backend": backend.cpu()}
    lat, by_cmd = _latencies(results)
    seconds = max(r["seconds"] for r in results)
    requests = sum(r["requests"] for r in results)
    statuses: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    for r in results:
        statuses.update(r["statuses"])
        failures.update(r["failures"])
    server_cpu = cpu1["server"] - cpu0["server"]
    backend_cpu = cpu1["backend"] - cpu0["backend"]
    gen_cpu = sum(r["cpu_seconds"] for r in results)
    return {
        "target": name,
        "level": level,
        "requests": requests,
        "seconds": seconds,
        "req_per_s": requests / seconds if seconds else math.nan,
        "p50_ms": percentile(lat, 50) * 1e3,
        "p90_ms": percentile(lat, 90) * 1e3,
        "p99_ms": percentile(lat, 99) * 1e3,
        "max_ms": (lat[-1] if lat else math.nan) * 1e3,
        "by_command_ms": {
            c: {"p50": percentile(v, 50) * 1e3, "p99": percentile(v, 99) * 1e3, "n": len(v)}
            for c, v in by_cmd.items()
        },
        "server_cpu_s": server_cpu,
        "backend_cpu_s": backend_cpu,
        "generator_cpu_s": gen_cpu,
        "server_cores": server_cpu / seconds if seconds else math.nan,
        "generator_cores": gen_cpu / seconds if seconds else math.nan,
        "req_per_server_core_s": requests / server_cpu if server_cpu > 0 else math.nan,
        "statuses": dict(statuses),
        "failures": dict(failures),
        "warmup_failures": dict(warm_failures),
        "errors": sum(failures.values()) + sum(v for k, v in statuses.items() if k != "200"),
    }


def _run_target(
    name: str, backend: ServerProc, sessions: list[Session], opts: ThroughputOptions, work: Path
) -> list[dict[str, Any]]:
    target = _start_target(name, backend, work, opts.base_root)
    server = target.proc if target is not None else backend.proc
    where = target or backend
    out = work / f"load-{name}"
    out.mkdir(parents=True, exist_ok=True)
    gens = _generators(where, _tls(name), sessions, opts, out)
    rows = []
    try:
        for level in opts.levels:
            row = measure_window(name, level, gens, server, backend.proc, opts)
            if isinstance(target, GatewayProc):
                text = target.metrics_text()
                row["gateway_metric_requests"] = metric(text, "sentry_requests_total")
            rows.append(row)
            print(
                f"  {name:<12} c={level:<3} {fmt(row['req_per_s'], 0):>7} req/s  "
                f"p50 {row['p50_ms']:.2f} ms  p99 {row['p99_ms']:.2f} ms  "
                f"server {row['server_cores']:.2f} cores  errors {row['errors']}",
                flush=True,
            )
    finally:
        for g in gens:
            g.stop()
        if target is not None:
            target.proc.stop()
    return rows


def _ratios(rows: list[dict[str, Any]], levels: tuple[int, ...]) -> dict[str, Any]:
    """The ratios of one round's rows (each target once per level)."""
    at = {(r["target"], r["level"]): r for r in rows}
    out: dict[str, Any] = {}
    for level in levels:
        for gw in GATEWAYS:
            g = at.get((gw, level))
            if g is None:
                continue
            entry: dict[str, float] = {}
            other = at.get((f"{gw}-base", level))
            if other is not None:  # this checkout's gateway against the base checkout's
                entry["req_per_core_s_vs_base"] = (
                    g["req_per_server_core_s"] / other["req_per_server_core_s"]
                )
                entry["added_p50_ms_vs_base"] = g["p50_ms"] - other["p50_ms"]
            bases = ("bare", "direct", "bare-tls") if _tls(gw) else ("bare", "direct")
            for base in bases:
                b = at.get((base, level))
                if b is None:
                    continue
                field = base.replace("-", "_")
                entry[f"req_per_s_vs_{field}"] = g["req_per_s"] / b["req_per_s"]
                entry[f"req_per_core_s_vs_{field}"] = (
                    g["req_per_server_core_s"] / b["req_per_server_core_s"]
                )
                entry[f"added_p50_ms_vs_{field}"] = g["p50_ms"] - b["p50_ms"]
                entry[f"added_p99_ms_vs_{field}"] = g["p99_ms"] - b["p99_ms"]
            out[f"{gw}@{level}"] = entry
    return out


def median_ratios(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Each ratio's median over the rounds (each round's targets measured
    minutes apart, so a machine that drifts moves all of them alike), with
    its range as ``<field>_range``."""
    out: dict[str, Any] = {}
    for key in dict.fromkeys(k for r in rounds for k in r):
        fields = dict.fromkeys(f for r in rounds for f in r.get(key, {}))
        entry: dict[str, Any] = {}
        for field in fields:
            values = sorted(r[key][field] for r in rounds if field in r.get(key, {}))
            entry[field] = statistics.median(values)
            if len(values) > 1:
                entry[f"{field}_range"] = [values[0], values[-1]]
        out[key] = entry
    return out


def round_order(targets: tuple[str, ...], n: int) -> tuple[str, ...]:
    """The targets of round ``n`` (from 0): in the order given, every other
    round reversed. On 2026-12-04 the target run right after another
    measured about 6 % lower than in the reverse order (two 4-round runs of
    the same two commits: 0.92x one way, 1.04x the other), so each target
    takes each place equally often."""
    return targets if n % 2 == 0 else targets[::-1]


def _start_backend(opts: ThroughputOptions, work: Path, users: int) -> ServerProc:
    if opts.backend == "demo":
        return start_backend(work / "backend", users)
    if opts.backend != "c":
        raise BenchError(f"unknown backend {opts.backend!r} (known: demo, c)")
    why = mailhost.available()
    if why is not None:
        raise BenchError(f"--backend c: {why}")
    answers = mailhost.mix_answers(work / "recording", opts.heartbeat)
    return mailhost.start_mailhost(work / "mailhost", commands=answers)


def run_throughput(opts: ThroughputOptions, work: Path) -> dict[str, Any]:
    """Run every target at every level, ``opts.rounds`` times over (targets
    interleaved); return the JSON-ready report."""
    work = work.resolve()
    sessions = make_sessions(opts.devices)
    print(
        f"throughput: {opts.devices} DeviceIds, {len(sessions)} associations, "
        f"levels {list(opts.levels)}, {opts.duration:g} s windows",
        flush=True,
    )
    backend = _start_backend(opts, work, len(users_of(sessions)))
    rows: list[dict[str, Any]] = []
    rounds: list[dict[str, Any]] = []
    started = time.time()
    for name in opts.targets:
        if name not in TARGETS + EXTRA_TARGETS:
            known = ", ".join(TARGETS + EXTRA_TARGETS)
            raise BenchError(f"unknown target {name!r} (known: {known})")
    try:
        for n in range(max(1, opts.rounds)):
            if opts.rounds > 1:
                print(f"round {n + 1} of {opts.rounds}", flush=True)
            these: list[dict[str, Any]] = []
            for name in round_order(opts.targets, n):
                these += [
                    {**row, "round": n + 1}
                    for row in _run_target(name, backend, sessions, opts, work)
                ]
            rows += these
            rounds.append(_ratios(these, opts.levels))
    finally:
        backend.proc.stop()
    return {
        "scenario": "throughput",
        "started": started,
        "options": {
            "devices": opts.devices,
            "associations": len(sessions),
            "levels": list(opts.levels),
            "duration_s": opts.duration,
            "generators": opts.generators,
            "mix": list(CYCLE),
            "rounds": max(1, opts.rounds),
            "base_root": str(opts.base_root) if opts.base_root else None,
            "backend": opts.backend,
        },
        "rows": rows,
        "ratios": median_ratios(rounds),
        "ratios_by_round": rounds,
    }


def markdown(report: dict[str, Any]) -> str:
    """The throughput tables (with several rounds: every row, and the
    ratios' medians with their range over the rounds)."""
    several = report["options"].get("rounds", 1) > 1
    lines = [
        "| target | conns | req/s | p50 ms | p99 ms | server CPU s | req per server "
        "core-s | backend CPU s | generator cores | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["rows"]:
        label = LABELS.get(r["target"], r["target"])
        if several:
            label += f" (round {r['round']})"
        lines.append(
            f"| {label} | {r['level']} | {fmt(r['req_per_s'], 0)} "
            f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['server_cpu_s']:.2f} "
            f"| {fmt(r['req_per_server_core_s'], 0)} | {r['backend_cpu_s']:.2f} "
            f"| {r['generator_cores']:.2f} | {r['errors']} |"
        )
    based = any("req_per_core_s_vs_base" in e for e in report["ratios"].values())
    tls = any("req_per_core_s_vs_bare_tls" in e for e in report["ratios"].values())
    extra = " req/core-s vs bare TLS | added p50 ms vs bare TLS |" if tls else ""
    extra += " req/core-s vs base | added p50 ms vs base |" if based else ""
    lines += [
        "",
        *(
            [f"Ratios: the median of {report['options']['rounds']} rounds (range in brackets).", ""]
            if several
            else []
        ),
        "| ratio | conns | req/s vs bare | req/core-s vs bare | req/s vs direct | "
        "added p50 ms vs direct | added p99 ms vs direct | added p50 ms vs bare |" + extra,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        + " ---: |" * (2 * (based + tls)),
    ]
    for key, e in report["ratios"].items():
        name, _, level = key.partition("@")

        def cell(field: str, entry: dict[str, Any] = e) -> str:
            text = fmt(entry.get(field), 2)
            low_high = entry.get(f"{field}_range")
            return f"{text} ({low_high[0]:.2f} to {low_high[1]:.2f})" if low_high else text

        row = (
            f"| {LABELS[name]} | {level} | {cell('req_per_s_vs_bare')} "
            f"| {cell('req_per_core_s_vs_bare')} | {cell('req_per_s_vs_direct')} "
            f"| {cell('added_p50_ms_vs_direct')} | {cell('added_p99_ms_vs_direct')} "
            f"| {cell('added_p50_ms_vs_bare')} |"
        )
        if tls:
            row += f" {cell('req_per_core_s_vs_bare_tls')} | {cell('added_p50_ms_vs_bare_tls')} |"
        if based:
            row += f" {cell('req_per_core_s_vs_base')} | {cell('added_p50_ms_vs_base')} |"
        lines.append(row)
    lines += ["", *_per_command(report)]
    if report["options"].get("backend") == "c":
        lines += [
            "",
            "The backend was bench/mailhost.c serving the demo backend's recorded answers.",
        ]
    return "\n".join(lines)


def _per_command(report: dict[str, Any]) -> list[str]:
    """p50 per command at the lowest level: the gateway's cost without the mix's queueing."""
    rows = report["rows"]
    if not rows:
        return []
    low = min(r["level"] for r in rows)
    at = [r for r in rows if r["level"] == low and r.get("round", 1) == 1]
    head = " | ".join(LABELS.get(r["target"], r["target"]) for r in at)
    lines = [
        f"p50 / p99 ms per command at {low} connections:",
        "",
        f"| command | {head} |",
        "| --- |" + " ---: |" * len(at),
    ]
    for command in dict.fromkeys(CYCLE):
        cells = []
        for r in at:
            c = r["by_command_ms"].get(command)
            cells.append(f"{c['p50']:.2f} / {c['p99']:.2f}" if c else "-")
        lines.append(f"| {command} | " + " | ".join(cells) + " |")
    return lines
