"""Slow clients: the gateway keeps serving devices while thousands of sockets stall.

Approach. One demo backend and one gateway (``sentry run`` with the shipped
defaults: 20 s header and body clocks, 500 B/s minimum body rate, the
connection cap from RLIMIT_NOFILE), each in its own process, and one load
generator running the throughput EAS mix at ``level`` connections for two
windows of ``duration`` seconds: a *baseline* with nothing else going on, then
the same again while ``bench.slowloris`` holds ``attackers`` slow connections
open (a third each trickling a head, idling, trickling a body; every one the
gateway closes is reopened at once). Both windows are in the same run, on the
same processes, so the side-by-side latency and success ratio show what the
attack costs normal devices. The gateway's own counters (connections open,
timeouts by phase, refused) and the growth of its log file during the attack
show how it defended itself, and that it did so without flooding its log.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.eas_mix import make_sessions
from bench.proc import BenchError, start
from bench.servers import GatewayProc, metric, start_backend, start_gateway
from bench.stats import fmt
from bench.throughput import ThroughputOptions, measure_window

__all__ = ["SlowClientOptions", "run_slow_clients", "slow_clients_markdown"]

PHASES = ("head", "idle", "body", "send")


@dataclass
class SlowClientOptions:
    attackers: int = 5000
    devices: int = 200
    level: int = 4
    duration: float = 20.0
    interval: float = 1.0  # seconds between the attackers' bytes
    ramp_rate: float = 2000.0  # new slow connections per second
    tls: bool = False


def _gateway_counters(gw: GatewayProc) -> dict[str, float]:
    text = gw.metrics_text()
    out = {
        f"timeouts_{p}": metric(text, "sentry_connection_timeouts_total", phase=p) for p in PHASES
    }
    out["open"] = metric(text, "sentry_connections_open", listener="devices")
    out["max"] = metric(text, "sentry_connections_max", listener="devices")
    out["refused"] = metric(text, "sentry_connections_refused_total", listener="devices")
    return out


def _events_since(log: Path, offset: int) -> dict[str, int]:
    """Log events written after ``offset``, by event name."""
    counts: Counter[str] = Counter()
    with log.open("rb") as fh:
        fh.seek(offset)
        for line in fh:
            try:
                counts[str(json.loads(line).get("event"))] += 1
            except ValueError:
                counts["(not JSON)"] += 1
    return dict(counts)


def _success(row: dict[str, Any]) -> float:
    ok = row["statuses"].get("200", 0)
    total = row["requests"] + sum(row["failures"].values())
    return ok / total if total else float("nan")


def run_slow_clients(opts: SlowClientOptions, work: Path) -> dict[str, Any]:
    """Baseline window, then the same window under attack (module comment)."""
    sessions = make_sessions(opts.devices)
    backend = start_backend(work / "backend", len(sessions))
    gateway = start_gateway(work / "gateway", [backend.url], tls=opts.tls)
    topts = ThroughputOptions(
        devices=opts.devices, levels=(opts.level, opts.level), duration=opts.duration
    )
    job = {
        "mode": "mix", "host": gateway.host, "port": gateway.port, "tls": opts.tls,
        "sessions": [[s.device_id, s.user, s.device_type] for s in sessions],
        "levels": [opts.level, opts.level], "duration": opts.duration,
        "max_requests": 10**9, "heartbeat": 5, "warmup_timeout": 180.0,
        "out": str(work / "load" / "gen0"),
    }  # fmt: skip
    (work / "load").mkdir(parents=True, exist_ok=True)
    gen = start("loadgen", [sys.executable, "-m", "bench.loadgen"], work / "load", pipes=True)
    attacker = None
    try:
        gen.send({"job": job})
        baseline = measure_window("baseline", opts.level, [gen], gateway.proc, backend.proc, topts)
        before = _gateway_counters(gateway)
        log0, rss0 = (work / "gateway" / "gateway.jsonl").stat().st_size, gateway.proc.rss()
        attacker = start("slowloris", [sys.executable, "-m", "bench.slowloris"], work, pipes=True)
        attacker.send({"job": {
            "host": gateway.host, "port": gateway.port, "tls": opts.tls,
            "connections": opts.attackers, "interval": opts.interval, "ramp_rate": opts.ramp_rate,
        }})  # fmt: skip
        ready = attacker.receive(opts.attackers / opts.ramp_rate + 120)
        during = _gateway_counters(gateway)
        t0 = time.monotonic()
        attacked = measure_window("attacked", opts.level, [gen], gateway.proc, backend.proc, topts)
        attack_seconds = time.monotonic() - t0
        after = _gateway_counters(gateway)
        attacker.send({"cmd": "stop"})
        attack = attacker.receive(60)
        log1, rss1 = (work / "gateway" / "gateway.jsonl").stat().st_size, gateway.proc.rss()
        events = _events_since(work / "gateway" / "gateway.jsonl", log0)
    finally:
        for proc in (attacker, gen, gateway.proc, backend.proc):
            if proc is not None:
                proc.stop()
    if baseline["requests"] == 0 or attacked["requests"] == 0:
        raise BenchError("a window answered no request")
    for row in (baseline, attacked):
        row["success_ratio"] = _success(row)
    return {
        "scenario": "slow-clients",
        "options": vars(opts),
        "baseline": baseline,
        "attacked": attacked,
        "attacker_ready": ready,
        "attacker": attack,
        "gateway_before_attack": before,
        "gateway_attack_established": during,
        "gateway_after_window": after,
        "attack_window_seconds": attack_seconds,
        "log_bytes_during_attack": log1 - log0,
        "log_events_during_attack": events,
        "gateway_rss_growth_mib": (rss1 - rss0) / 2**20,
    }


def slow_clients_markdown(r: dict[str, Any]) -> str:
    b, a = r["baseline"], r["attacked"]
    rows = [
        "| window | requests | req/s | success | p50 ms | p99 ms | max ms | gateway cores |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in (("baseline", b), (f"{r['options']['attackers']:,} slow connections", a)):
        rows.append(
            f"| {name} | {row['requests']:,} | {fmt(row['req_per_s'], 0)} | "
            f"{row['success_ratio']:.4f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
            f"{row['max_ms']:.1f} | {row['server_cores']:.2f} |"
        )
    g0, g1, atk = r["gateway_before_attack"], r["gateway_after_window"], r["attacker"]
    timeouts = ", ".join(f"{p} {g1[f'timeouts_{p}'] - g0[f'timeouts_{p}']:,.0f}" for p in PHASES)
    rows += [
        "",
        f"- attack: {r['attacker_ready']['open']:,} slow connections open when the window "
        f"began (ramp {r['attacker_ready']['seconds']:.1f} s), {atk['peak_open']:,} at the peak, "
        f"{sum(atk['opened'].values()):,} opened in all, {sum(atk['closed_by_server'].values()):,} "
        f"closed by the gateway ({atk['closed_by_server']}), connect failures "
        f"{atk['connect_failures'] or 'none'}",
        f"- gateway during the attack window ({r['attack_window_seconds']:.0f} s): connections "
        f"open {r['gateway_attack_established']['open']:,.0f} (cap {g1['max']:,.0f}), "
        f"timeouts {timeouts}, refused {g1['refused'] - g0['refused']:,.0f}",
        f"- log written during the attack: {r['log_bytes_during_attack'] / 1024:,.1f} KiB, "
        f"lines by event {r['log_events_during_attack']} (`request`: the normal devices' "
        f"access log); gateway RSS growth {r['gateway_rss_growth_mib']:.1f} MiB",
    ]
    return "\n".join(rows)
