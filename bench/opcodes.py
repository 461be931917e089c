"""Where the gateway's Python work per request goes: bytecodes executed, by function.

Run: ``.venv/bin/python -m bench.opcodes [requests] [--level N] [--top N]``.

Why. ``bench instructions`` says how many instructions a request costs, the
same from run to run, but callgrind sees the interpreter's C functions, not
the gateway's Python ones; py-spy and cProfile see those, but sample time (the
machine's moment) or add a cost per call (which inflates small functions).
This counts the bytecodes each Python function executes in a window, a number
that does not depend on the machine either.

Approach. The EAS mix of ``throughput`` (one generator, ``--level``
connections, 128 devices) against a gateway started through
``bench._opcodes_boot``, which runs ``sentry run`` unchanged and, on SIGUSR1,
sets a trace function on the gateway's main thread (the event loop's) that
counts opcode events per code object; SIGUSR2 stops it and writes the counts.
The window is ``requests`` requests after the warm-up; the report gives the
bytecodes per request in all, by file and by function (exclusive: a
function's own bytecodes, not its callees').

What it leaves out: the work of C code (JSON encoding, regular expressions,
the TLS layer, the system calls) and of other threads. A bytecode is not a unit
of time: one that calls into C may cost a hundred simple ones. Read the
shares beside ``bench instructions``' totals. Tracing makes the gateway some
30x slower; the counts are not affected.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.eas_mix import make_sessions, users_of
from bench.proc import BenchError
from bench.profile import short_path
from bench.servers import Wrap, start_backend, start_gateway
from bench.throughput import ThroughputOptions, _generators

__all__ = ["count", "report"]

DEVICES = 128
WINDOW_TIMEOUT = 3600.0


def count(requests: int, level: int, work: Path) -> tuple[dict[str, int], int]:
    """Bytecodes per code object (``file:line:qualname``) over a window of
    ``requests`` requests; and the requests answered in it."""
    work = work.resolve()
    out = work / "opcodes.json"
    out.unlink(missing_ok=True)
    sessions = make_sessions(DEVICES)
    backend = start_backend(work / "backend", len(users_of(sessions)))
    try:
        boot = (sys.executable, "-m", "bench._opcodes_boot")
        wrap = Wrap(boot, {"SENTRY_BENCH_OPCODES": str(out)})
        gateway = start_gateway(work / "gateway", [backend.url], tls=False, wrap=wrap)
        load = ThroughputOptions(
            devices=DEVICES,
            levels=(level,),
            duration=WINDOW_TIMEOUT,
            max_requests=requests,
            warmup_timeout=WINDOW_TIMEOUT,
        )
        gens = _generators(gateway, False, sessions, load, work / "load")
        try:
            gens[0].receive(WINDOW_TIMEOUT)  # warm
            os.kill(gateway.proc.pid, signal.SIGUSR1)
            time.sleep(0.5)  # the handler runs between two bytecodes of the loop
            gens[0].send({"cmd": "go"})
            result = gens[0].receive(WINDOW_TIMEOUT)
            os.kill(gateway.proc.pid, signal.SIGUSR2)
            deadline = time.monotonic() + 60
            while not out.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            if not out.exists():
                raise BenchError(f"the gateway wrote no counts:\n{gateway.proc.tail()}")
            counts: dict[str, int] = json.loads(out.read_text())
        finally:
            for g in gens:
                g.stop()
            gateway.proc.stop()
    finally:
        backend.proc.stop()
    return counts, int(result["requests"])


def report(counts: dict[str, int], requests: int, top: int = 40) -> dict[str, Any]:
    """Totals per request, by file and by function."""
    total = sum(counts.values())
    by_file: Counter[str] = Counter()
    for where, n in counts.items():
        by_file[short_path(where.rsplit(":", 2)[0])] += n
    per = max(1, requests)
    return {
        "requests": requests,
        "bytecodes_per_request": total / per,
        "by_file": [(f, n / per) for f, n in by_file.most_common(top)],
        "by_function": [(short_path(w), n / per) for w, n in Counter(counts).most_common(top)],
    }


def main(argv: list[str]) -> None:
    args = [a for a in argv if not a.startswith("--")]
    requests = int(args[0]) if args else 2000
    level = int(argv[argv.index("--level") + 1]) if "--level" in argv else 64
    top = int(argv[argv.index("--top") + 1]) if "--top" in argv else 40
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "sentry-opcodes"
    counts, answered = count(requests, level, work)
    r = report(counts, answered, top)
    total = r["bytecodes_per_request"]
    print(f"bytecodes per request ({answered:,} requests, {level} connections): {total:,.0f}")
    print("by file:")
    for name, n in r["by_file"]:
        print(f"  {n:8,.0f}  {n / total * 100:5.1f} %  {name}")
    print("by function (its own bytecodes):")
    for name, n in r["by_function"]:
        print(f"  {n:8,.0f}  {n / total * 100:5.1f} %  {name}")


if __name__ == "__main__":
    main(sys.argv[1:])
