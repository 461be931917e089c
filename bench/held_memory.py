"""Where a held Ping's memory goes: Python's allocations in the gateway, by owner.

Run: ``.venv/bin/python -m bench.held_memory [pings] [--tls] [--lines]``
(``--lines``: also the 25 source lines that allocated the most). The held-Ping
scenario of ``bench/held.py`` (a demo backend, one gateway, a load generator
holding one Ping per connection) is started with the gateway traced by
tracemalloc (``bench/_tracemalloc/sitecustomize.py``, on the gateway's path
only through ``PYTHONPATH``). A snapshot is taken once every association is
primed and another once all Pings are held; the difference, divided by the
number held, is each Ping's share, grouped by who allocated it: the gateway
(by module; ``proxy/h1server.py`` is the device connection, ``proxy/leanclient.py``
the backend's), aiohttp (whose server side the device listener no longer
uses), asyncio and the rest. tracemalloc counts Python's allocations
only (not OpenSSL's, see ``bench_tlsconn.py``) and slows the gateway down:
read the shares, not the RSS, from this run.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path

from bench.eas_mix import Session
from bench.held import _sample_until_held, _Setup, _start, _stop
from bench.profile import short_path

HERE = Path(__file__).resolve().parent

_CLIENT = ("client", "connector", "payload", "multipart", "formdata", "cookiejar")


def _owner(path: str) -> str:
    if "/sentry/" in path:
        return "gateway: " + path.split("/sentry/", 1)[1]
    if "/aiohttp/" in path:
        name = path.rsplit("/", 1)[1]
        return "aiohttp client" if name.startswith(_CLIENT) else "aiohttp server"
    if "/asyncio/" in path or path.endswith(("selectors.py", "socket.py", "ssl.py")):
        return "asyncio, sockets, ssl"
    return "other"


def main(pings: int, tls: bool) -> dict[str, float]:
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "sentry-held-memory"
    out = work / "tracemalloc.json"
    out.unlink(missing_ok=True)
    os.environ["SENTRY_BENCH_TRACEMALLOC"] = str(out)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(HERE / "_tracemalloc"), os.environ.get("PYTHONPATH")])
    )
    sessions = [Session(f"TRACE{i:06d}", f"user{i:06d}") for i in range(pings)]
    setup = _start(work, sessions, heartbeat=900, ramp_rate=500.0, tls=tls)
    try:
        pid = setup.gateway.proc.pid
        # the baseline once every association is primed, the second once all are held
        for g in setup.gens:
            g.receive(max(120.0, pings / 200))
        time.sleep(1.0)
        os.kill(pid, signal.SIGUSR2)
        time.sleep(2.0)
        held = _hold_all(setup, pings)
        os.kill(pid, signal.SIGUSR2)
        deadline = time.monotonic() + 120
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        diff: dict[str, list[int]] = json.loads(out.read_text())
    finally:
        _stop(setup)
    shares: Counter[str] = Counter()
    for path, (size, _count) in diff.items():
        shares[_owner(path)] += size / held
    return dict(shares)


def top_lines(held: int, n: int) -> list[tuple[str, float, float]]:
    """The ``n`` source lines that allocated most of what the last run kept,
    per held Ping (``<file>.lines``, written by the sitecustomize)."""
    path = Path(os.environ.get("TMPDIR", "/tmp")) / "sentry-held-memory" / "tracemalloc.json.lines"
    lines: dict[str, list[int]] = json.loads(path.read_text())
    ranked = sorted(lines.items(), key=lambda kv: -kv[1][0])[:n]
    return [(short_path(where), size / held, count / held) for where, (size, count) in ranked]


def _hold_all(setup: _Setup, pings: int) -> int:
    for g in setup.gens:
        g.send({"cmd": "go"})
    samples = _sample_until_held(setup.gateway, pings, pings / 500.0)
    time.sleep(1.0)  # the last answers' bookkeeping settles
    return samples[-1][0]


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    count = int(args[0]) if args else 2000
    result = main(count, "--tls" in sys.argv)
    total = sum(result.values())
    print(f"Python bytes per held Ping ({count:,} held, tracemalloc): {total:,.0f}")
    shown = {k: v for k, v in result.items() if abs(v) >= 100}
    for owner, size in sorted(shown.items(), key=lambda kv: -kv[1]):
        print(f"  {size:8,.0f}  {owner}")
    print(f"  {total - sum(shown.values()):8,.0f}  (the rest, under 100 bytes each)")
    if "--lines" in sys.argv:
        print("the 25 largest source lines (bytes and blocks per held Ping):")
        for where, size, blocks in top_lines(count, 25):
            print(f"  {size:8,.0f} {blocks:6.2f}  {where}")
