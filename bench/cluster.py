"""Convergence between nodes: a block through node A answers Pings held on B and C.

Approach. One PostgreSQL database (a fresh one on the server that
``--dsn``, ``SENTRY_BENCH_POSTGRES_DSN`` or ``SENTRY_TEST_POSTGRES_DSN``
names, dropped at the end), one demo backend and three real gateways
(``sentry run``, ``store.kind: postgresql``), each in its own process; the
held Pings come from load generator processes (``bench.loadgen``, job
``hold``: one connection per Ping, as phones do), one per node.

* ``single``: ``rounds`` associations held on A and as many on B; then, one
  at a time, alternately, each is blocked through A's admin API (a bulk
  action whose filter is its DeviceId). The time from sending the action to
  the Ping's answer (Status 129) is the propagation time: for the Pings on
  A it is the same-node baseline, for those on B the cross-node time
  (commit on A, NOTIFY, B reads the feed, applies, ends the Ping).
* ``bulk``: ``pings`` associations spread over the three nodes (i % 3), all
  blocked by one bulk action through A: per node, the time to each answer.

The generators and the bench read one clock (``time.monotonic``, system-wide
on Linux). The ratios cross-node / same-node are of the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.eas_mix import Session
from bench.proc import BenchError, Proc, start
from bench.profile import profiled
from bench.servers import GatewayProc, ServerProc, metric, start_backend, start_gateway
from bench.stats import fmt, summary
from sentry.testing.postgres import Databases

__all__ = ["ClusterOptions", "cluster_markdown", "run_cluster"]

BULK_TYPE = "BenchBulk"
NODES = ("a", "b", "c")


@dataclass
class ClusterOptions:
    rounds: int = 50  # single blocks per side (same node, cross node)
    pings: int = 1000  # the bulk block, spread over the three nodes
    ramp_rate: float = 400.0
    heartbeat: int = 600  # long: only the blocks may answer them
    dsn: str | None = None


def _server_dsn(opts: ClusterOptions) -> str:
    dsn = opts.dsn or os.environ.get("SENTRY_BENCH_POSTGRES_DSN")
    dsn = dsn or os.environ.get("SENTRY_TEST_POSTGRES_DSN")
    if not dsn:
        raise BenchError(
            "cluster needs a PostgreSQL server: --dsn or SENTRY_BENCH_POSTGRES_DSN "
            "(postgresql://postgres@127.0.0.1:5432/postgres)"
        )
    return dsn


@dataclass
class _Gen:
    proc: Proc
    out: Path
    sessions: list[Session]
    node: str


def _hold(
    work: Path, name: str, gw: GatewayProc, sessions: list[Session], o: ClusterOptions
) -> _Gen:
    out = work / f"{name}.json"
    job = {
        "mode": "hold",
        "host": gw.host,
        "port": gw.port,
        "tls": False,
        "sessions": [[s.device_id, s.user, s.device_type] for s in sessions],
        "heartbeat": o.heartbeat,
        "ramp_rate": o.ramp_rate,
        "local_hosts": [],
        "deadline": o.heartbeat + 60,
        "out": str(out),
    }
    proc = start(name, [sys.executable, "-m", "bench.loadgen"], work, pipes=True)
    proc.send({"job": job})
    return _Gen(proc, out, sessions, name)


def _held(gw: GatewayProc) -> int:
    return int(metric(gw.metrics_text(), "sentry_held_long_polls", command="Ping"))


def _admin(gw: GatewayProc, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        gw.admin_url + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {gw.token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise BenchError(f"{method} {path}: {exc.code} {exc.read()[:300]!r}") from None


def _wait(what: str, check: Any, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _ramp(gens: list[_Gen], nodes: dict[str, GatewayProc], want: dict[str, int]) -> None:
    for g in gens:
        primed = g.proc.receive(180)
        if primed.get("errors"):
            raise BenchError(f"{g.node}: priming failed: {primed['errors']}")
    for g in gens:
        g.proc.send({"cmd": "go"})
    for g in gens:
        g.proc.receive(180)  # all sent
    for name, n in want.items():
        _wait(f"{n} Pings held on {name}", lambda gw=nodes[name], n=n: _held(gw) >= n)


def _known_on(gw: GatewayProc, total: int) -> bool:
    return int(_admin(gw, "GET", "/api/associations?limit=1")["total"]) >= total


def _finish(gens: list[_Gen]) -> dict[str, dict[str, Any]]:
    """Stop the generators; per session: (node, answered, http, ping)."""
    for g in gens:
        with contextlib.suppress(BrokenPipeError):  # it ended by itself: all answered
            g.proc.send({"cmd": "stop"})
    for g in gens:
        g.proc.receive(60)
    rows: dict[str, dict[str, Any]] = {}
    for g in gens:
        data = json.loads(g.out.read_text())
        for i, s in enumerate(g.sessions):
            rows[s.device_id] = {
                "node": g.node,
                "answered": data["answered"][i],
                "http": data["http"][i],
                "ping": data["ping"][i],
            }
    return rows


def _block(gw: GatewayProc, filter: dict[str, str]) -> tuple[float, dict[str, Any]]:
    t0 = time.monotonic()
    answer = _admin(
        gw, "POST", "/api/associations/actions/block", {"filter": filter, "note": "bench"}
    )
    return t0, answer


def run_cluster(opts: ClusterOptions, work: Path) -> dict[str, Any]:
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    databases = Databases(_server_dsn(opts))
    dsn = asyncio.run(databases.create())
    store = {
        "kind": "postgresql",
        "dsn": dsn,
        "touch_flush_seconds": 5.0,
        "feed_poll_seconds": 2.0,
    }
    users = 2 * opts.rounds + opts.pings
    backend: ServerProc | None = None
    nodes: dict[str, GatewayProc] = {}
    print(
        f"cluster: three nodes on one PostgreSQL; {opts.rounds} single blocks per side, "
        f"a bulk block of {opts.pings:,} over three nodes",
        flush=True,
    )
    try:
        backend = start_backend(work / "backend", users)
        servers = [f"http://127.0.0.1:{backend.port}"]
        for name in NODES:
            nodes[name] = start_gateway(work / f"node-{name}", servers, tls=False, store=store)
        single = _run_single(opts, work, nodes)
        bulk = _run_bulk(opts, work, nodes)
        lag = {
            name: metric(gw.metrics_text(), "sentry_cluster_lag_seconds")
            for name, gw in nodes.items()
        }
        applied = {
            name: metric(gw.metrics_text(), "sentry_cluster_changes_applied_total")
            for name, gw in nodes.items()
        }
    finally:
        for gw in nodes.values():
            gw.proc.stop()
        if backend is not None:
            backend.proc.stop()
        asyncio.run(databases.drop_all())
    return {
        "scenario": "cluster",
        "options": {k: v for k, v in vars(opts).items() if k != "dsn"},
        "single": single,
        "bulk": bulk,
        "lag_seconds_sum_at_end": lag,
        "changes_applied": applied,
    }


def _run_single(opts: ClusterOptions, work: Path, nodes: dict[str, GatewayProc]) -> dict[str, Any]:
    same = [Session(f"ONEA{i:05d}", f"user{i:06d}") for i in range(opts.rounds)]
    cross = [Session(f"ONEB{i:05d}", f"user{opts.rounds + i:06d}") for i in range(opts.rounds)]
    gens = [
        _hold(work, "single-a", nodes["a"], same, opts),
        _hold(work, "single-b", nodes["b"], cross, opts),
    ]
    try:
        _ramp(gens, nodes, {"a": len(same), "b": len(cross)})
        _wait("A to know B's associations", lambda: _known_on(nodes["a"], 2 * opts.rounds))
        sent: dict[str, float] = {}
        for s_same, s_cross in zip(same, cross, strict=True):
            for s, node in ((s_same, "a"), (s_cross, "b")):
                before = _held(nodes[node])
                t0, answer = _block(nodes["a"], {"device_id": s.device_id})
                if answer.get("matched") != 1:
                    raise BenchError(f"block of {s.device_id} matched {answer.get('matched')}")
                sent[s.device_id] = t0
                _wait(f"{s.device_id} answered", lambda n=node, b=before: _held(nodes[n]) < b)
        rows = _finish(gens)
    finally:
        for g in gens:
            g.proc.stop()
    return _delays(rows, sent)


def _run_bulk(opts: ClusterOptions, work: Path, nodes: dict[str, GatewayProc]) -> dict[str, Any]:
    base = 2 * opts.rounds
    sessions = [
        Session(f"BULK{i:06d}", f"user{base + i:06d}", BULK_TYPE) for i in range(opts.pings)
    ]
    parts = {name: sessions[k::3] for k, name in enumerate(NODES)}
    gens = [_hold(work, f"bulk-{name}", nodes[name], part, opts) for name, part in parts.items()]
    try:
        held0 = {name: _held(gw) for name, gw in nodes.items()}
        _ramp(gens, nodes, {name: held0[name] + len(parts[name]) for name in NODES})
        _wait("A to know every association", lambda: _known_on(nodes["a"], base + opts.pings))
        with (
            profiled(nodes["a"].proc.pid, "cluster-bulk-a"),
            profiled(nodes["b"].proc.pid, "cluster-bulk-b"),
        ):
            t0, answer = _block(nodes["a"], {"device_type": BULK_TYPE})
            api = time.monotonic() - t0
            for name in NODES:
                _wait(f"{name} answered", lambda n=name: _held(nodes[n]) <= held0[n], timeout=60)
        rows = _finish(gens)
    finally:
        for g in gens:
            g.proc.stop()
    out = _delays(rows, dict.fromkeys(rows, t0))
    out["api_seconds"] = api
    out["matched"] = answer.get("matched")
    return out


def _delays(rows: dict[str, dict[str, Any]], sent: dict[str, float]) -> dict[str, Any]:
    by_node: dict[str, list[float]] = {}
    status_129 = 0
    for device, row in rows.items():
        if row["answered"] and device in sent:
            by_node.setdefault(row["node"].rsplit("-", 1)[-1], []).append(
                row["answered"] - sent[device]
            )
        status_129 += row["http"] == 200 and row["ping"] == 129
    same = by_node.get("a", [])
    cross = by_node.get("b", []) + by_node.get("c", [])
    s_same, s_cross = summary(same, scale=1e3), summary(cross, scale=1e3)
    return {
        "associations": len(rows),
        "answered": sum(len(v) for v in by_node.values()),
        "status_129": status_129,
        "same_node_ms": s_same,
        "cross_node_ms": s_cross,
        "per_node_ms": {n: summary(v, scale=1e3) for n, v in sorted(by_node.items())},
        "ratio_p50": _ratio(s_cross["p50"], s_same["p50"]),
        "ratio_p99": _ratio(s_cross["p99"], s_same["p99"]),
    }


def _ratio(a: float, b: float) -> float | None:
    return None if not b or b != b or a != a else a / b


def cluster_markdown(r: dict[str, Any]) -> str:
    lines = [
        "| block through A | Pings | Status 129 | same node (A) p50 / p99 | "
        "other nodes (B, C) p50 / p99 | ratio p50 / p99 |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, key in (("one association at a time", "single"), ("one bulk action", "bulk")):
        e = r[key]
        same, cross = e["same_node_ms"], e["cross_node_ms"]
        lines.append(
            f"| {label} | {fmt(e['associations'])} | {fmt(e['status_129'])} "
            f"| {same['p50']:.1f} / {same['p99']:.1f} ms "
            f"| {cross['p50']:.1f} / {cross['p99']:.1f} ms "
            f"| {fmt(e['ratio_p50'])} / {fmt(e['ratio_p99'])} |"
        )
    lines.append("")
    lines.append(f"Bulk API call on A: {r['bulk']['api_seconds'] * 1e3:.0f} ms.")
    return "\n".join(lines)
