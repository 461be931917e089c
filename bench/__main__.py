"""``python -m bench [scenario] [options]``: run the load tests and micro-benchmarks.

Without a scenario every one runs with small, bounded defaults (what
``make bench`` does, about ten minutes on two cores); each scenario alone
takes its own options (``python -m bench held-pings --help``). Results go
to ``bench/results/`` (or ``--out``) as JSON and markdown; the targets of
issue #6 are checked in the tables. Every process a run starts is stopped
when it ends, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.cluster import ClusterOptions, cluster_markdown, run_cluster
from bench.held import (
    BlockOptions,
    HeldOptions,
    block_markdown,
    held_markdown,
    run_block,
    run_held_pings,
)
from bench.instructions import InstructionsOptions, run_instructions
from bench.instructions import markdown as instructions_markdown
from bench.ldapsync import ldap_sync_markdown, run_ldap_sync
from bench.micro import MICRO, micro_markdown, run_micro
from bench.modeltest import modeltest_markdown, run_modeltest
from bench.proc import ROOT, BenchError, raise_nofile, stop_all
from bench.report import header, plot, write
from bench.slowclients import SlowClientOptions, run_slow_clients, slow_clients_markdown
from bench.storm import StormOptions, run_storm, storm_markdown
from bench.throughput import TARGETS, ThroughputOptions, markdown, run_throughput
from bench.workers import WorkersOptions, run_workers, workers_markdown

RESULTS = ROOT / "bench" / "results"
# Targets of issue #6 (this 2-core machine).
TARGET_CORE_RATIO = 0.8
TARGET_ADDED_P50_MS = 0.6
TARGET_ADDED_P99_MS = 2.0
# issue #14: added p50 over direct at most this much more than the bare forwarder adds
TARGET_ADDED_P50_OVER_BARE_MS = 0.3
TARGET_RSS_KIB = 16.0
TARGET_RSS_TLS_KIB = 32.0
TARGET_BLOCK_P99_MS = 100.0
TARGET_STORM_S = 10.0  # issue #14: 10,000 devices reconnect with TLS, all held again
TARGET_STORM_PINGS = 10_000
# Targets of issue #13: a block through one node reaches a Ping held on another.
TARGET_CLUSTER_P99_MS = 1000.0
AIM_CLUSTER_P99_MS = 100.0


def _levels(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def throughput_targets(r: dict[str, Any]) -> list[str]:
    out = []
    low = min(r["options"]["levels"])
    for key, e in r["ratios"].items():
        ratio = e.get("req_per_core_s_vs_bare")
        like = e.get("req_per_core_s_vs_bare_tls")
        if like is not None:  # a TLS gateway: the target is against the bare forwarder with TLS
            plain = f"; {ratio:.2f}x the bare forwarder without TLS" if ratio is not None else ""
            out.append(
                f"- {key}: req per core-second = {like:.2f}x the bare forwarder with TLS{plain} "
                f"(target >= {TARGET_CORE_RATIO}x, TLS on both): "
                f"{_verdict(like >= TARGET_CORE_RATIO)}"
            )
        elif ratio is not None:
            out.append(
                f"- {key}: req per core-second = {ratio:.2f}x the bare forwarder "
                f"(target >= {TARGET_CORE_RATIO}x): {_verdict(ratio >= TARGET_CORE_RATIO)}"
            )
        versus = e.get("req_per_core_s_vs_base")
        if versus is not None:
            out.append(
                f"- {key}: req per core-second = {versus:.2f}x the base checkout's gateway, "
                f"p50 {e['added_p50_ms_vs_base']:+.2f} ms against it"
            )
        over_bare = e.get("added_p50_ms_vs_bare_tls", e.get("added_p50_ms_vs_bare"))
        which = "the bare forwarder with TLS" if like is not None else "the bare forwarder"
        level = int(key.rsplit("@", 1)[1])
        if over_bare is not None and level <= 4:
            ok = over_bare <= TARGET_ADDED_P50_OVER_BARE_MS
            out.append(
                f"- {key}: p50 adds {over_bare:+.2f} ms more than {which} adds "
                f"(target <= {TARGET_ADDED_P50_OVER_BARE_MS} ms more): {_verdict(ok)}"
            )
        if key == f"gateway@{low}" and "added_p50_ms_vs_direct" in e:
            p50, p99 = e["added_p50_ms_vs_direct"], e["added_p99_ms_vs_direct"]
            ok = p50 <= TARGET_ADDED_P50_MS and p99 <= TARGET_ADDED_P99_MS
            out.append(
                f"- added latency at {low} connections over direct: p50 {p50:+.2f} ms, "
                f"p99 {p99:+.2f} ms (targets <= {TARGET_ADDED_P50_MS} / "
                f"{TARGET_ADDED_P99_MS} ms): {_verdict(ok)}"
            )
    return out


def held_targets(r: dict[str, Any]) -> list[str]:
    rss = r["rss_per_ping_kib"]
    tls = bool(r["options"].get("tls"))
    target = TARGET_RSS_TLS_KIB if tls else TARGET_RSS_KIB
    return [
        f"- RSS per held Ping {rss:.1f} KiB at {r['held']:,} with TLS {'on' if tls else 'off'} "
        f"(target <= {target:.0f} KiB at 100,000): {_verdict(rss <= target)}",
        f"- answered OK at the heartbeat: {r['answered_on_time']:,} of "
        f"{r['options']['pings']:,}: {_verdict(r['answered_on_time'] == r['options']['pings'])}",
    ]


def block_targets(r: dict[str, Any]) -> list[str]:
    p99 = r["propagation_ms"]["p99"]
    api = r["api_seconds"] * 1e3
    after = r.get("after_api_ms", {}).get("p99", float("nan"))
    every = r["status_129"] == r["blocked"] and r["unblocked_still_held"] == r["unblocked_total"]
    return [
        f"- block reaches a held Ping in p99 {p99:.1f} ms (target <= {TARGET_BLOCK_P99_MS:.0f} "
        f"ms): {_verdict(p99 <= TARGET_BLOCK_P99_MS)}",
        f"- bulk block (#14): the API call {api:.1f} ms, the Pings p99 {after:.1f} ms after it "
        f"returned (targets <= {TARGET_BLOCK_P99_MS:.0f} ms each): "
        f"{_verdict(api <= TARGET_BLOCK_P99_MS and after <= TARGET_BLOCK_P99_MS)}",
        f"- every blocked Ping got Status 129 and no other Ping was answered: {_verdict(every)}",
    ]


def cluster_targets(r: dict[str, Any]) -> list[str]:
    out = []
    for label, key in (("one association", "single"), ("1,000 over three nodes", "bulk")):
        e = r[key]
        p99 = e["cross_node_ms"]["p99"]
        every = e["status_129"] == e["associations"]
        out.append(
            f"- {label}: a block through A answers a Ping held on another node in p99 "
            f"{p99:.1f} ms (target <= {TARGET_CLUSTER_P99_MS:.0f} ms: "
            f"{_verdict(p99 <= TARGET_CLUSTER_P99_MS)}; aim <= {AIM_CLUSTER_P99_MS:.0f} ms: "
            f"{_verdict(p99 <= AIM_CLUSTER_P99_MS)}); every Ping Status 129: {_verdict(every)}"
        )
    return out


def _section(title: str, table: str, targets: list[str]) -> str:
    return f"## {title}\n\n{table}\n\n" + "\n".join(targets)


def cmd_throughput(args: argparse.Namespace) -> str:
    opts = ThroughputOptions(
        devices=args.devices,
        levels=_levels(args.levels),
        duration=args.duration,
        max_requests=args.max_requests,
        generators=args.generators,
        targets=tuple(t for t in args.targets.split(",") if t),
        rounds=args.rounds,
        base_root=args.base_root.resolve() if args.base_root else None,
        backend=args.backend,
    )
    r = run_throughput(opts, args.out / "work" / "throughput")
    args.reports["throughput"] = r
    md = _section("throughput", markdown(r), throughput_targets(r))
    write(args.out, "throughput", r, md)
    return md


def instructions_targets(r: dict[str, Any]) -> list[str]:
    out = []
    limit = 1 / TARGET_CORE_RATIO
    for key, value in r["ratios"].items():
        if not key.startswith("instructions") or "/bare" not in key:
            continue
        out.append(
            f"- {key}: {value:.3f}x the instructions per request (a {TARGET_CORE_RATIO}x "
            f"requests-per-core target, if both spent their time alike, is <= {limit:.2f}x): "
            f"{_verdict(value <= limit)}"
        )
    return out


def cmd_instructions(args: argparse.Namespace) -> str:
    opts = InstructionsOptions(
        devices=args.devices,
        levels=_levels(args.levels),
        requests=args.requests,
        targets=tuple(t for t in args.targets.split(",") if t),
        base_root=args.base_root.resolve() if args.base_root else None,
        counters=tuple(c for c in args.counters.split(",") if c),
        handshakes=args.handshakes,
    )
    r = run_instructions(opts, args.out / "work" / "instructions")
    md = _section("instructions per request", instructions_markdown(r), instructions_targets(r))
    write(args.out, "instructions", r, md)
    return md


def cmd_held(args: argparse.Namespace) -> str:
    opts = HeldOptions(
        pings=args.pings,
        heartbeat=args.heartbeat,
        ramp_rate=args.ramp_rate,
        tls=args.tls,
        generators=args.generators,
        local_hosts=args.local_hosts,
        backend_hosts=args.backend_hosts,
        event_loop=args.event_loop,
        workers=args.workers,
        dsn=args.dsn,
        backend=args.backend,
    )
    r = run_held_pings(opts, args.out / "work" / "held-pings")
    args.reports["held-pings"] = r
    md = _section("held Pings", held_markdown(r), held_targets(r))
    write(args.out, "held-pings", r, md)
    return md


def cmd_block(args: argparse.Namespace) -> str:
    opts = BlockOptions(
        pings=args.pings, blocked=args.blocked, tls=args.tls, event_loop=args.event_loop
    )
    r = run_block(opts, args.out / "work" / "block")
    args.reports["block"] = r
    md = _section("block propagation", block_markdown(r), block_targets(r))
    write(args.out, "block", r, md)
    return md


def storm_targets(r: dict[str, Any]) -> list[str]:
    ok = r["storm_seconds"] <= TARGET_STORM_S and r["held_before"] >= TARGET_STORM_PINGS
    return [
        f"- {r['held_before']:,} Pings held again {r['storm_seconds']:.1f} s after the drop "
        f"(target: {TARGET_STORM_PINGS:,} in <= {TARGET_STORM_S:.0f} s): {_verdict(ok)}"
    ]


def cmd_storm(args: argparse.Namespace) -> str:
    opts = StormOptions(
        pings=args.pings,
        tls=not args.no_tls,
        generators=args.generators,
        ramp_rate=args.ramp_rate,
        handshakes=args.handshakes,
        event_loop=args.event_loop,
        workers=args.workers,
        dsn=args.dsn,
        resume=args.resume,
        generator=args.generator,
        backend=args.backend,
    )
    r = run_storm(opts, args.out / "work" / "storm")
    args.reports["storm"] = r
    md = _section("reconnect storm", storm_markdown(r), storm_targets(r))
    write(args.out, "storm", r, md)
    return md


def cmd_micro(args: argparse.Namespace) -> str:
    unknown = sorted(set(args.names) - set(MICRO))
    if unknown:
        raise BenchError(f"unknown micro-benchmark {unknown[0]!r} (known: {', '.join(MICRO)})")
    r = run_micro(args.names or None)
    md = f"## micro-benchmarks\n\n{micro_markdown(r)}"
    write(args.out, "micro", r, md)
    return md


def cmd_slow(args: argparse.Namespace) -> str:
    opts = SlowClientOptions(
        attackers=args.attackers,
        devices=args.devices,
        level=args.level,
        duration=args.duration,
        interval=args.interval,
        ramp_rate=args.ramp_rate,
        tls=args.tls,
    )
    r = run_slow_clients(opts, args.out / "work" / "slow-clients")
    md = f"## slow clients\n\n{slow_clients_markdown(r)}"
    write(args.out, "slow-clients", r, md)
    return md


def cmd_fuzz(args: argparse.Namespace) -> str:
    from sentry.testing.fuzz import run_fuzz  # Hypothesis: a test dependency

    work = args.out / "work" / "fuzz"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = time.monotonic()
    report = run_fuzz(work, args.examples, seed_value=args.seed)
    seconds = time.monotonic() - started
    r = {
        "scenario": "fuzz",
        "options": {"examples": args.examples, "seed": args.seed},
        "inputs": report.inputs,
        "statuses": dict(report.statuses),
        "forwarded": report.forwarded,
        "problems": report.problems,
        "ambiguous_identity": [a.decode("latin-1") for a in report.ambiguous],
        "seconds": seconds,
    }
    statuses = ", ".join(f"{k}: {v:,}" for k, v in sorted(report.statuses.items()))
    md = (
        f"## fuzz (request path)\n\n{report.inputs:,} inputs in {seconds:.0f} s; answers "
        f"{statuses}; {report.forwarded:,} forwarded, every one matched by a forward decision; "
        f"problems: {len(report.problems)}; forwarded with two Authorization headers "
        f"(decided on the first): {len(report.ambiguous)}"
    )
    write(args.out, "fuzz", r, md)
    return md


def cmd_ldap_sync(args: argparse.Namespace) -> str:
    from sentry.testing.slapd import slapd_binary

    if slapd_binary() is None:
        raise BenchError("ldap-sync needs OpenLDAP's slapd (apt-get install slapd ldap-utils)")
    r = run_ldap_sync(args.users, args.out / "work" / "ldap-sync")
    md = f"## LDAP directory sync\n\n{ldap_sync_markdown(r)}"
    write(args.out, "ldap-sync", r, md)
    return md


TARGET_WORKERS_RATIO = 1.8


def cmd_workers(args: argparse.Namespace) -> str:
    opts = WorkersOptions(
        dsn=args.dsn,
        duration=args.duration,
        connections=args.connections,
        pings=args.pings,
        nofile=args.nofile,
        generator=args.generator,
        pipeline=args.pipeline,
    )
    if args.pipeline > 1 and opts.chosen_generator() != "wrk":
        raise SystemExit("bench workers: --pipeline needs --generator wrk")
    opts.batch = args.generator_sched == "batch" and opts.chosen_generator() == "wrk"
    r = run_workers(opts, args.out / "work" / "workers")
    ratio = r["ratios"]["refused"]
    one_cap = r["held"].get("1", {}).get("cap", 0)
    held = r["held"].get("2", {}).get("held", 0)
    beyond = held == opts.pings and held > one_cap and 2 * held > opts.nofile
    targets = [
        f"- 2 workers / 1, requests the gateway answers alone: {ratio:.2f}x (target >= "
        f"{TARGET_WORKERS_RATIO}x on 2 cores shared with the load generator"
        f"{', under SCHED_BATCH' if opts.batch else ''}): "
        f"{_verdict(ratio >= TARGET_WORKERS_RATIO)}",
        f"- 2 workers hold all {opts.pings:,} Pings (one process can hold {one_cap:,.0f} with "
        f"{opts.nofile:,} descriptors; each held Ping takes 2): {_verdict(beyond)}",
    ]
    md = _section("workers", workers_markdown(r), targets)
    write(args.out, "workers", r, md)
    return md


def cmd_modeltest(args: argparse.Namespace) -> str:
    work = args.out / "work" / "modeltest"
    r = run_modeltest(
        work, args.examples, args.min_steps, args.max_steps, args.seed, args.suite_examples
    )
    md = f"## model-based wire test\n\n{modeltest_markdown(r)}"
    write(args.out, "modeltest", r, md)
    return md


def cmd_cluster(args: argparse.Namespace) -> str:
    opts = ClusterOptions(rounds=args.rounds, pings=args.pings, dsn=args.dsn)
    r = run_cluster(opts, args.out / "work" / "cluster")
    md = _section("cluster convergence", cluster_markdown(r), cluster_targets(r))
    write(args.out, "cluster", r, md)
    return md


def cmd_all(args: argparse.Namespace) -> str:
    """Every scenario with the make-bench defaults."""
    steps: list[tuple[Callable[[argparse.Namespace], str], dict[str, Any]]] = [
        (cmd_throughput, _defaults("throughput")),
        (cmd_held, {**_defaults("held-pings"), "pings": 2000, "heartbeat": 60}),
        (cmd_block, _defaults("block")),
        (cmd_slow, _defaults("slow-clients")),
        (cmd_fuzz, _defaults("fuzz")),
        (cmd_ldap_sync, _defaults("ldap-sync")),
        (cmd_modeltest, _defaults("modeltest")),
        (cmd_micro, _defaults("micro")),
    ]
    parts = []
    for command, values in steps:
        ns = argparse.Namespace(**{**values, "out": args.out, "reports": args.reports})
        try:
            parts.append(command(ns))
        except BenchError as exc:
            parts.append(f"## {command.__name__[4:]}\n\nFAILED: {exc}")
            print(f"FAILED: {exc}", file=sys.stderr)
    summary = f"# bench summary\n\n{header()}\n\n" + "\n\n".join(parts) + "\n"
    (args.out / "summary.md").write_text(summary)
    return summary


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    sub = p.add_subparsers(dest="scenario")
    t = sub.add_parser("throughput", help="req/s, latency and CPU: direct, bare, gateway")
    t.add_argument("--devices", type=int, default=1000)
    t.add_argument("--levels", default="4,64", help="connection counts, comma-separated")
    t.add_argument("--duration", type=float, default=10.0, help="seconds per window")
    t.add_argument("--max-requests", type=int, default=1_000_000, help="cap per window")
    t.add_argument("--generators", type=int, default=1, help="load generator processes")
    t.add_argument("--targets", default=",".join(TARGETS))
    t.add_argument(
        "--rounds", type=int, default=1, help="measure every target this often, interleaved"
    )
    t.add_argument(
        "--base-root",
        type=Path,
        help="another checkout (e.g. a git worktree of an earlier commit) whose gateway "
        "the targets gateway-base and gateway-tls-base run",
    )
    t.add_argument(
        "--backend",
        choices=("demo", "c"),
        default="demo",
        help="the mail server: the demo backend (Python, a core of its own at 64 connections) "
        "or bench/mailhost.c serving the demo backend's recorded answers to the mix",
    )
    t.add_argument("--out", type=Path, default=argparse.SUPPRESS, help="results folder")
    t.set_defaults(func=cmd_throughput)
    ins = sub.add_parser(
        "instructions", help="user-space instructions per request under callgrind (valgrind)"
    )
    ins.add_argument("--devices", type=int, default=128)
    ins.add_argument("--levels", default="4,64", help="connection counts, comma-separated")
    ins.add_argument("--requests", type=int, default=1500, help="requests per window")
    ins.add_argument("--targets", default="bare,gateway", help="bare, gateway, bare-tls, "
                     "gateway-tls, gateway-base, gateway-tls-base, gateway-uvloop, "
                     "gateway-tls-uvloop")  # fmt: skip
    ins.add_argument("--base-root", type=Path, help="the checkout of the *-base targets")
    ins.add_argument("--counters", default="instructions,syscalls",
                     help="instructions (callgrind), syscalls (strace)")  # fmt: skip
    ins.add_argument("--handshakes", type=int, default=0,
                     help="TLS targets: also count this many handshakes alone")  # fmt: skip
    ins.add_argument("--out", type=Path, default=argparse.SUPPRESS, help="results folder")
    ins.set_defaults(func=cmd_instructions)
    h = sub.add_parser("held-pings", help="RSS and CPU per held Ping through the gateway")
    h.add_argument("--pings", type=int, default=10_000)
    h.add_argument("--heartbeat", type=int, default=90)
    h.add_argument("--ramp-rate", type=float, default=500.0, help="new Pings per second")
    h.add_argument("--tls", action="store_true")
    h.add_argument("--generators", type=int, default=1)
    h.add_argument("--local-hosts", type=int, default=1, help="source addresses 127.0.0.1..n")
    h.add_argument("--backend-hosts", type=int, default=1, help="backend addresses 127.0.0.1..n")
    h.add_argument("--event-loop", choices=("asyncio", "uvloop"), default="asyncio")
    h.add_argument("--workers", type=int, default=1, help="gateway.workers (needs --dsn)")
    h.add_argument("--dsn", help="PostgreSQL server for the store (a database made for the run)")
    h.add_argument(
        "--backend",
        choices=("demo", "c"),
        default="demo",
        help="the mail server: the demo backend (one process) or bench/mailhost.c, one "
        "process per --backend-hosts address (each with a descriptor limit of its own)",
    )
    h.add_argument("--out", type=Path, default=argparse.SUPPRESS, help="results folder")
    h.set_defaults(func=cmd_held)
    b = sub.add_parser("block", help="time from a bulk Block to the held Pings' answers")
    b.add_argument("--pings", type=int, default=1000)
    b.add_argument("--blocked", type=int, default=500)
    b.add_argument("--tls", action="store_true")
    b.add_argument("--event-loop", choices=("asyncio", "uvloop"), default="asyncio")
    b.add_argument("--out", type=Path, default=argparse.SUPPRESS, help="results folder")
    b.set_defaults(func=cmd_block)
    st = sub.add_parser("storm", help="every held Ping drops at once and reconnects (TLS)")
    st.add_argument("--pings", type=int, default=2000)
    st.add_argument("--generators", type=int, default=2)
    st.add_argument("--ramp-rate", type=float, default=300.0, help="new Pings/s before the storm")
    st.add_argument("--handshakes", type=int, default=1000, help="TLS handshakes timed alone")
    st.add_argument("--no-tls", action="store_true")
    st.add_argument("--event-loop", choices=("asyncio", "uvloop"), default="asyncio")
    st.add_argument("--workers", type=int, default=1, help="gateway.workers (needs --dsn)")
    st.add_argument("--resume", action="store_true", help="phones offer a saved TLS session")
    st.add_argument(
        "--generator",
        choices=("python", "wrk", "phones"),
        default="python",
        help="who reconnects in the storm: the Python generators, wrk (C; no --resume) or "
        "phones (C, bench/phones.c: they hold the Pings too, each resuming its own session)",
    )
    st.add_argument(
        "--backend",
        choices=("demo", "c"),
        default="demo",
        help="the mail server: the demo backend (Python) or bench/mailhost.c, which holds "
        "Pings for next to no CPU (a mail server's work is on its own machine)",
    )
    st.add_argument("--dsn", help="PostgreSQL server for the store (a database made for the run)")
    st.add_argument("--out", type=Path, default=argparse.SUPPRESS, help="results folder")
    st.set_defaults(func=cmd_storm)
    sc = sub.add_parser("slow-clients", help="normal devices while 5,000 slow connections attack")
    sc.add_argument("--attackers", type=int, default=5000)
    sc.add_argument("--devices", type=int, default=200)
    sc.add_argument("--level", type=int, default=4, help="normal load: connections")
    sc.add_argument("--duration", type=float, default=20.0, help="seconds per window")
    sc.add_argument("--interval", type=float, default=1.0, help="seconds between slow bytes")
    sc.add_argument("--ramp-rate", type=float, default=2000.0, help="new slow connections/s")
    sc.add_argument("--tls", action="store_true")
    sc.add_argument("--out", type=Path, default=argparse.SUPPRESS, help="results folder")
    sc.set_defaults(func=cmd_slow)
    ls = sub.add_parser("ldap-sync", help="a directory sync of N users from a real slapd")
    ls.add_argument("--users", type=int, default=10_000)
    ls.add_argument("--out", type=Path, default=argparse.SUPPRESS, help="results folder")
    ls.set_defaults(func=cmd_ldap_sync)
    cl = sub.add_parser("cluster", help="three nodes on one PostgreSQL: block on A, Pings on B/C")
    cl.add_argument("--rounds", type=int, default=50, help="single blocks per side")
    cl.add_argument("--pings", type=int, default=1000, help="the bulk block over three nodes")
    cl.add_argument("--dsn", default=None, help="PostgreSQL server URI (a database is created)")
    cl.add_argument("--out", type=Path, default=argparse.SUPPRESS, help="results folder")
    cl.set_defaults(func=cmd_cluster)
    f = sub.add_parser("fuzz", help="the request-path fuzz target, long profile")
    f.add_argument("--examples", type=int, default=2000)
    f.add_argument("--seed", type=int, default=None, help="fixed Hypothesis seed")
    f.add_argument("--out", type=Path, default=argparse.SUPPRESS, help="results folder")
    f.set_defaults(func=cmd_fuzz)
    w = sub.add_parser("workers", help="req/s with 1 and 2 workers; held Pings past RLIMIT_NOFILE")
    w.add_argument("--dsn", default="", help="PostgreSQL superuser URI (a database is made)")
    w.add_argument("--duration", type=float, default=10.0, help="seconds per case")
    w.add_argument("--connections", type=int, default=32)
    w.add_argument("--pings", type=int, default=1500)
    w.add_argument("--nofile", type=int, default=2048, help="soft RLIMIT_NOFILE of the node")
    w.add_argument(
        "--generator",
        choices=("auto", "wrk", "hammer"),
        default="auto",
        help="request-rate generator: wrk (Debian's, in C) or bench.hammer; auto: wrk if installed",
    )
    w.add_argument(
        "--pipeline",
        type=int,
        default=1,
        help="wrk: requests in each write on a connection (HTTP/1.1 pipelining), so the "
        "generator takes less of the two cores",
    )
    w.add_argument(
        "--generator-sched",
        choices=("normal", "batch"),
        default="batch",
        help="wrk's scheduling policy (the hammer always runs normal): batch (SCHED_BATCH) "
        "does not preempt a busy worker at each wake-up, as phones on other machines do not",
    )
    w.add_argument("--out", type=Path, default=argparse.SUPPRESS, help="results folder")
    w.set_defaults(func=cmd_workers)
    mt = sub.add_parser("modeltest", help="the model-based wire test, long profile")
    mt.add_argument("--examples", type=int, default=300)
    mt.add_argument("--min-steps", type=int, default=30)
    mt.add_argument("--max-steps", type=int, default=120)
    mt.add_argument("--seed", type=int, default=None, help="fixed Hypothesis seed")
    mt.add_argument("--suite-examples", type=int, default=None, help="the baseline's examples")
    mt.add_argument("--out", type=Path, default=argparse.SUPPRESS, help="results folder")
    mt.set_defaults(func=cmd_modeltest)
    m = sub.add_parser("micro", help=", ".join(MICRO))
    m.add_argument("names", nargs="*", help=f"some of {', '.join(MICRO)} (default all)")
    m.add_argument("--out", type=Path, default=argparse.SUPPRESS, help="results folder")
    m.set_defaults(func=cmd_micro)
    return p


def _defaults(scenario: str) -> dict[str, Any]:
    args = parser().parse_args([scenario])
    return {k: v for k, v in vars(args).items() if k not in ("out", "scenario")}


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.reports = {}
    args.out = args.out.resolve()
    raise_nofile()
    signal.signal(signal.SIGTERM, _terminate)
    func = getattr(args, "func", cmd_all)
    try:
        text = func(args)
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        stop_all()
    made = plot(args.out, args.reports.get("throughput"), args.reports.get("held-pings"))
    print()
    print(text)
    for path in made:
        print(f"plot: {path}")
    print(f"\nresults in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
