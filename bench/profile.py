"""Sampling profiles of a server under test, when asked for.

Approach. With ``SENTRY_BENCH_PROFILE=<folder>`` in the environment, a bench
window wraps its measured span in ``profiled(pid, name)``: ``py-spy record``
(installed apart: ``.venv/bin/pip install py-spy``; not a dependency) samples
the process at 1 kHz in raw (collapsed stack) form into
``<folder>/<name>.txt``, and ``summarize`` prints the functions with the most
samples, inclusive and exclusive, idle threads left out. Without the
variable, or without py-spy, nothing happens: timings are never taken under
a profiler.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

__all__ = ["profiled", "short_path", "summarize"]

ENV = "SENTRY_BENCH_PROFILE"
_IDLE = ("select (selectors.py", "_worker (concurrent/futures/thread.py:81)", "wait (threading.py")


def _py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


@contextlib.contextmanager
def profiled(pid: int, name: str, *, subprocesses: bool = False) -> Iterator[None]:
    """``subprocesses``: its child processes too (a supervisor's workers)."""
    folder, tool = os.environ.get(ENV), _py_spy()
    if not folder or tool is None:
        yield
        return
    out = Path(folder) / f"{name}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [tool, "record", "--nonblocking", "-p", str(pid), "-r", "1000", "-f", "raw"]
    cmd += ["-o", str(out), *(["--subprocesses"] if subprocesses else [])]
    spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # attached before the window starts
    try:
        yield
    finally:
        spy.send_signal(2)  # SIGINT: py-spy writes what it has
        with contextlib.suppress(subprocess.TimeoutExpired):
            spy.wait(30)
        print(f"  profile of {name}: {out}", flush=True)


def summarize(path: Path, top: int = 40) -> str:
    """The functions with the most samples in a raw py-spy profile."""
    inclusive: Counter[str] = Counter()
    exclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if any(idle in frames[-1] for idle in _IDLE):
            continue
        n = int(count)
        total += n
        exclusive[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    rows = [f"{total} busy samples", "inclusive:"]
    rows += [f"{n:7d} {100 * n / total:5.1f}% {f[:150]}" for f, n in inclusive.most_common(top)]
    rows += ["exclusive:"]
    rows += [f"{n:7d} {100 * n / total:5.1f}% {f[:150]}" for f, n in exclusive.most_common(top)]
    return "\n".join(rows)


if __name__ == "__main__":
    print(summarize(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 40))


def short_path(where: str) -> str:
    """A source path (or ``path:line...``) as the reports show it: from the
    package on (``sentry/...``, a site-package, the standard library)."""
    for marker in ("/site-packages/", "/sentry/", "/python3.11/"):
        if marker in where:
            head = "sentry/" if marker == "/sentry/" else ""
            return head + where.split(marker, 1)[1]
    return where
