"""Instructions and system calls per request: the servers under test counted
by callgrind and strace.

Why. Requests per core-second is what an operator buys, but on a shared
two-core machine it moves by a third from one minute to the next, and it
moved the bare forwarder and the gateway differently (2026-12-04: the same
gateway code measured 0.85x the bare forwarder in the afternoon and 0.65x in
the evening). The user-space instructions a request costs do not depend on
the machine's moment: valgrind's callgrind counts them, the same total for
the same binary, inputs and load whatever else the machine runs. This bench
turns the throughput target into a number a change can be judged by in one
run.

Approach. The same EAS mix as ``throughput`` (``bench.loadgen``, job
``mix``, one generator process) on the same demo backend. Each server under
test (bare forwarder, gateway, and on request TLS and a base checkout's
gateway) is started under ``valgrind --tool=callgrind --instr-atstart=no``
with ``PYTHONHASHSEED=0``: it runs uninstrumented (about 5x slower) through
its start and the generator's warm-up. For each level, once the generator
is warm, ``callgrind_control`` switches the counting on and zeroes it, the
generator sends ``requests`` requests (closed loop, ``level`` connections),
and a dump then gives the instructions executed (``Ir``) in the window,
divided by the requests answered. Under callgrind the server is about 50x
slower, so it is the bottleneck at every level: each turn of its event loop
finds several requests ready, as a saturated server does (at 4 connections
a real run is latency-bound instead, with fewer requests per turn).

A second pass (counter ``syscalls``) starts each server plainly and attaches
``strace -f -c`` to all its threads for the same kind of window: the system
calls per request, in all and by name (strace slows the server down, so only
the counts are kept). With ``handshakes``, a TLS target under callgrind also
gets a window of that many connections opened and closed without a request
(the loader's ``handshakes`` job): instructions per handshake, and the share
inside OpenSSL's ``SSL_do_handshake`` (from ``callgrind_annotate``).

What it does not count. Callgrind counts user-space instructions of every
thread of the process; the kernel's work in the system calls is not in it
(the strace pass counts the calls, not their cost), nor are cache misses or
branch mispredictions. The ratio ``gateway / bare`` of instructions per
request is the inverse of the requests-per-core ratio only as far as both
spend their time alike; it is a guide, not the target's measure.

Needs valgrind (Debian's package; ``callgrind_control`` is in it) for the
instructions, strace for the system calls.
"""

from __future__ import annotations

import itertools
import math
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.eas_mix import make_sessions, users_of
from bench.proc import BenchError, Proc, start
from bench.servers import ServerProc, Wrap, start_backend, start_bare, start_gateway
from bench.throughput import ThroughputOptions, _generators

__all__ = ["TARGETS", "InstructionsOptions", "markdown", "run_instructions"]

TARGETS = ("bare", "gateway")
EXTRA_TARGETS = (
    "bare-tls",
    "gateway-tls",
    "gateway-base",
    "gateway-tls-base",
    "gateway-uvloop",
    "gateway-tls-uvloop",
)
COUNTERS = ("instructions", "syscalls")
START_TIMEOUT = 900.0  # an uninstrumented valgrind start, on a busy machine
WINDOW_TIMEOUT = 3600.0


@dataclass
class InstructionsOptions:
    devices: int = 128
    levels: tuple[int, ...] = (4, 64)
    requests: int = 1500  # per level and target
    targets: tuple[str, ...] = TARGETS
    heartbeat: int = 5
    base_root: Path | None = None  # the checkout of the *-base targets
    counters: tuple[str, ...] = COUNTERS
    handshakes: int = 0  # TLS targets under callgrind: also a window of this many handshakes


def available(counters: tuple[str, ...] = COUNTERS) -> str | None:
    """Why this bench cannot count ``counters`` here, or None."""
    tools = {"instructions": ("valgrind", "callgrind_control"), "syscalls": ("strace",)}
    for counter in counters:
        for tool in tools.get(counter, ()):
            if shutil.which(tool) is None:
                package = "strace" if tool == "strace" else "valgrind"
                return f"{tool} is not installed (Debian's {package} package)"
    return None


def _wrap(workdir: Path) -> Wrap:
    out = workdir / "callgrind.out.%p"
    argv = ("valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}")
    return Wrap(argv, {"PYTHONHASHSEED": "0"}, START_TIMEOUT)


def _control(pid: int, *args: str) -> None:
    done = subprocess.run(
        ["callgrind_control", *args, str(pid)], capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0 or "OK" not in done.stdout:
        raise BenchError(f"callgrind_control {' '.join(args)}: {done.stdout}{done.stderr}")


def _last_dump(workdir: Path, pid: int) -> Path:
    """The newest numbered callgrind dump of ``pid``."""
    dumps = []
    for path in workdir.glob(f"callgrind.out.{pid}.*"):
        suffix = path.name.rsplit(".", 1)[1]
        if suffix.isdigit():
            dumps.append((int(suffix), path))
    if not dumps:
        raise BenchError(f"no callgrind dump of {pid} in {workdir}")
    return max(dumps)[1]


def _last_dump_total(workdir: Path, pid: int) -> int:
    """The ``totals:`` of the newest numbered dump of ``pid``."""
    dump = _last_dump(workdir, pid)
    for line in dump.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise BenchError(f"no totals in {dump}")


def _start(
    name: str, backend: ServerProc, workdir: Path, base_root: Path | None, counter: str
) -> ServerProc:
    wrap = _wrap(workdir) if counter == "instructions" else None
    tls = name.endswith("-tls") or "-tls-" in name
    if name.startswith("bare"):
        return start_bare(workdir, backend.url, tls=tls, wrap=wrap)
    root = None
    if name.endswith("-base"):
        if base_root is None:
            raise BenchError(f"target {name} needs --base-root (another checkout)")
        root = base_root
    loop = "uvloop" if name.endswith("-uvloop") else "asyncio"
    return start_gateway(workdir, [backend.url], tls=tls, root=root, wrap=wrap, event_loop=loop)


def _run_target(
    name: str, backend: ServerProc, opts: InstructionsOptions, work: Path, counter: str
) -> list[dict[str, Any]]:
    workdir = work / f"{name}-{counter}"
    began = time.monotonic()
    target = _start(name, backend, workdir, opts.base_root, counter)
    how = "under callgrind" if counter == "instructions" else "(syscalls counted by strace)"
    print(f"  {name}: started {how} in {time.monotonic() - began:.0f} s", flush=True)
    sessions = make_sessions(opts.devices)
    load = ThroughputOptions(
        devices=opts.devices,
        levels=opts.levels,
        duration=WINDOW_TIMEOUT,
        max_requests=opts.requests,
        targets=(name,),
        heartbeat=opts.heartbeat,
        warmup_timeout=WINDOW_TIMEOUT,
    )
    tls = name.endswith("-tls") or "-tls-" in name
    gens = _generators(target, tls, sessions, load, workdir / "load")
    rows = []
    try:
        for level in opts.levels:
            window = _callgrind_window if counter == "instructions" else _strace_window
            rows.append(window(name, level, gens[0], target, workdir))
            r = rows[-1]
            print(
                f"  {name:<16} c={level:<3} {r['requests']:>6} requests  "
                f"{r[f'{counter}_per_request']:>12,.1f} {counter} each  errors {r['errors']}",
                flush=True,
            )
        if tls and counter == "instructions" and opts.handshakes > 0:
            for g in gens:  # the mix's connections closed: the window sees handshakes only
                g.stop()
            rows.append(_handshake_window(name, opts.handshakes, target, workdir))
            r = rows[-1]
            print(
                f"  {name:<16} {r['handshakes']:>6} handshakes  "
                f"{r['instructions_per_handshake']:>12,.0f} instructions each, "
                f"{r['in_openssl_handshake']:.0%} of them in SSL_do_handshake",
                flush=True,
            )
    finally:
        for g in gens:
            g.stop()
        target.proc.stop(timeout=60)
    return rows


def _handshake_window(name: str, count: int, target: ServerProc, workdir: Path) -> dict[str, Any]:
    """``count`` TLS connections opened and closed without a request (the
    load generator's ``handshakes`` job, 20 at a time), counted by callgrind:
    the instructions per handshake, and the share of them inside OpenSSL's
    ``SSL_do_handshake`` (the rest: accepting, the TLS layer around it, closing)."""
    job = {"mode": "handshakes", "host": target.host, "port": target.port, "count": count,
           "concurrency": 20}  # fmt: skip
    proc = start("handshakes", [sys.executable, "-m", "bench.loadgen"], workdir, pipes=True)
    try:
        proc.send({"job": job})
        proc.receive(WINDOW_TIMEOUT)  # ready
        _control(target.proc.pid, "--instr=on")
        _control(target.proc.pid, "--zero")
        proc.send({"cmd": "go"})
        result = proc.receive(WINDOW_TIMEOUT)
        _control(target.proc.pid, "--dump")
        _control(target.proc.pid, "--instr=off")
    finally:
        proc.stop()
    done = count - sum(result.get("errors", {}).values())
    total = _last_dump_total(workdir, target.proc.pid)
    inside = _inclusive(_last_dump(workdir, target.proc.pid), "SSL_do_handshake")
    return {
        "target": name,
        "level": "handshakes",
        "handshakes": done,
        "requests": 0,
        "instructions_per_handshake": total / max(1, done),
        "in_openssl_handshake": inside / total if total else math.nan,
        "errors": count - done,
    }


def _inclusive(dump: Path, function: str) -> int:
    """The instructions of ``function`` and what it called, from ``callgrind_annotate``."""
    done = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", str(dump)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    for line in done.stdout.splitlines():
        if line.rstrip().endswith("]") and f":{function} [" in line:
            return int(line.split()[0].replace(",", ""))
    return 0


def _callgrind_window(
    name: str, level: int, gen: Proc, target: ServerProc, workdir: Path
) -> dict[str, Any]:
    ready = gen.receive(WINDOW_TIMEOUT + 60)
    _control(target.proc.pid, "--instr=on")
    _control(target.proc.pid, "--zero")
    began = time.monotonic()
    gen.send({"cmd": "go"})
    result = gen.receive(WINDOW_TIMEOUT + 120)
    _control(target.proc.pid, "--dump")
    _control(target.proc.pid, "--instr=off")
    total = _last_dump_total(workdir, target.proc.pid)
    row = _row(name, level, ready, result, time.monotonic() - began)
    row["instructions"] = total
    row["instructions_per_request"] = total / row["requests"] if row["requests"] else math.nan
    return row


def _strace_window(
    name: str, level: int, gen: Proc, target: ServerProc, workdir: Path
) -> dict[str, Any]:
    """The window with ``strace -c`` attached to every thread of the server:
    the system calls it made, by name, per request answered."""
    ready = gen.receive(WINDOW_TIMEOUT + 60)
    out = workdir / f"strace-c{level}.txt"
    tracer = subprocess.Popen(
        ["strace", "-f", "-c", "-o", str(out), "-p", str(target.proc.pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(1.0)  # attached to every thread before the window opens
    if tracer.poll() is not None:
        err = tracer.stderr.read().decode(errors="replace") if tracer.stderr else ""
        raise BenchError(f"strace could not attach to {target.proc.pid}: {err}")
    began = time.monotonic()
    gen.send({"cmd": "go"})
    result = gen.receive(WINDOW_TIMEOUT + 120)
    tracer.send_signal(signal.SIGINT)  # detaches and writes the summary
    tracer.wait(60)
    calls = _strace_calls(out)
    row = _row(name, level, ready, result, time.monotonic() - began)
    requests = row["requests"]
    row["syscalls"] = sum(calls.values())
    row["syscalls_per_request"] = row["syscalls"] / requests if requests else math.nan
    row["syscalls_by_name_per_request"] = {
        k: v / requests for k, v in calls.most_common() if requests
    }
    return row


def _strace_calls(path: Path) -> Counter[str]:
    """Calls by syscall name from ``strace -c``'s table."""
    calls: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        parts = line.split()
        # % time, seconds, usecs/call, calls, [errors,] syscall
        if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
            calls[parts[-1]] += int(parts[3])
    return calls


def _row(
    name: str, level: int, ready: dict[str, Any], result: dict[str, Any], seconds: float
) -> dict[str, Any]:
    statuses: Counter[str] = Counter(result["statuses"])
    failures: Counter[str] = Counter(result["failures"])
    return {
        "target": name,
        "level": level,
        "requests": int(result["requests"]),
        "window_s": seconds,
        "statuses": dict(statuses),
        "failures": dict(failures),
        "warmup_failures": ready.get("warmup_failures", {}),
        "errors": sum(failures.values()) + sum(v for k, v in statuses.items() if k != "200"),
    }


def _ratios(rows: list[dict[str, Any]], levels: tuple[int, ...]) -> dict[str, float]:
    at = {
        (r["target"], r["level"], c): r[f"{c}_per_request"]
        for r in rows
        for c in COUNTERS
        if f"{c}_per_request" in r
    }
    out: dict[str, float] = {}
    for level, counter in itertools.product(levels, COUNTERS):
        for gw, base in (
            ("gateway", "bare"),
            ("gateway-tls", "bare-tls"),
            ("gateway", "gateway-base"),
            ("gateway-tls", "gateway-tls-base"),
            ("gateway-uvloop", "gateway"),
            ("gateway-tls-uvloop", "gateway-tls"),
        ):
            if (gw, level, counter) in at and (base, level, counter) in at:
                ratio = at[(gw, level, counter)] / at[(base, level, counter)]
                out[f"{counter} {gw}/{base}@{level}"] = ratio
    return out


def run_instructions(opts: InstructionsOptions, work: Path) -> dict[str, Any]:
    """Every target at every level under callgrind; the JSON-ready report."""
    why = available(opts.counters)
    if why is not None:
        raise BenchError(why)
    for name in opts.targets:
        if name not in TARGETS + EXTRA_TARGETS:
            known = ", ".join(TARGETS + EXTRA_TARGETS)
            raise BenchError(f"unknown target {name!r} (known: {known})")
    work = work.resolve()
    sessions = make_sessions(opts.devices)
    print(
        f"instructions: {opts.devices} DeviceIds, {len(sessions)} associations, levels "
        f"{list(opts.levels)}, {opts.requests:,} requests per window, under callgrind",
        flush=True,
    )
    backend = start_backend(work / "backend", len(users_of(sessions)))
    rows: list[dict[str, Any]] = []
    started = time.time()
    try:
        for counter in opts.counters:
            if counter not in COUNTERS:
                raise BenchError(f"unknown counter {counter!r} (known: {', '.join(COUNTERS)})")
            for name in opts.targets:
                rows += _run_target(name, backend, opts, work, counter)
    finally:
        backend.proc.stop()
    return {
        "scenario": "instructions",
        "started": started,
        "options": {
            "devices": opts.devices,
            "associations": len(sessions),
            "levels": list(opts.levels),
            "requests": opts.requests,
            "targets": list(opts.targets),
            "counters": list(opts.counters),
            "handshakes": opts.handshakes,
            "base_root": str(opts.base_root) if opts.base_root else None,
            "python": sys.version.split()[0],
        },
        "rows": rows,
        "ratios": _ratios(rows, opts.levels),
    }


def markdown(report: dict[str, Any]) -> str:
    """The table of instructions per request, and the ratios."""
    rows = [r for r in report["rows"] if r["level"] != "handshakes"]
    at: dict[tuple[str, int], dict[str, Any]] = {(r["target"], r["level"]): {} for r in rows}
    for r in rows:
        at[(r["target"], r["level"])].update(r)
    lines = [
        "| target | connections | instructions per request | syscalls per request "
        "| the most frequent syscalls per request | errors |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for (target, level), r in at.items():
        top = ", ".join(
            f"{k} {v:.2f}" for k, v in list(r.get("syscalls_by_name_per_request", {}).items())[:5]
        )
        lines.append(
            f"| {target} | {level} | {r.get('instructions_per_request', math.nan):,.0f} | "
            f"{r.get('syscalls_per_request', math.nan):.2f} | {top} | {r['errors']} |"
        )
    shakes = [r for r in report["rows"] if r["level"] == "handshakes"]
    if shakes:
        lines += [
            "",
            "| target | TLS handshakes | instructions per handshake "
            "| of them in OpenSSL's SSL_do_handshake |",
            "| --- | ---: | ---: | ---: |",
        ]
        lines += [f"| {r['target']} | {r['handshakes']:,} | {r['instructions_per_handshake']:,.0f} "
                  f"| {r['in_openssl_handshake']:.0%} |" for r in shakes]  # fmt: skip
    if report["ratios"]:
        lines += ["", "| ratio per request | value |", "| --- | --- |"]
        lines += [f"| {k} | {v:.3f}x |" for k, v in report["ratios"].items()]
    return "\n".join(lines)
