"""``python -m bench.hammer``: one request, as fast as answers come, on C connections.

Approach. The leanest closed-loop generator the bench has, for measuring a
server's request rate rather than a device mix: the job (first stdin line,
JSON) names the host, port, number of keep-alive connections and one raw
HTTP request (latin-1 text); each connection sends it, reads the whole
answer (``bench.httpclient``), and sends it again. It connects, says
``ready``, waits for ``{"cmd": "go"}``, runs ``duration`` seconds and
reports ``result``: answers counted by HTTP status, and its own CPU seconds.
A connection the server closes is reopened (counted as ``reconnects``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from typing import Any

from bench.httpclient import Connection, HttpError
from bench.loadgen import Channel
from bench.proc import cpu_seconds, raise_nofile

__all__ = ["main"]


async def hammer(job: dict[str, Any], chan: Channel) -> None:
    host, port = job["host"], int(job["port"])
    data = job["request"].encode("latin-1")
    conns = [await Connection.open(host, port) for _ in range(int(job["connections"]))]
    statuses: Counter[int] = Counter()
    reconnects = 0
    chan.emit("ready")
    await chan.expect("go")
    cpu0, t0 = cpu_seconds(os.getpid()), time.monotonic()
    stop_at = t0 + float(job["duration"])

    async def loop(i: int) -> None:
        nonlocal reconnects
        conn = conns[i]
        while time.monotonic() < stop_at:
            try:
                status, _ = await conn.request(data)
            except (HttpError, OSError):
                status = 0
            statuses[status] += 1
            if conn.closed or status == 0:
                conn.close()
                conn = conns[i] = await Connection.open(host, port)
                reconnects += 1

    await asyncio.gather(*(loop(i) for i in range(len(conns))))
    seconds = time.monotonic() - t0
    for conn in conns:
        conn.close()
    chan.emit(
        "result",
        statuses={str(k): v for k, v in statuses.items()},
        seconds=seconds,
        cpu_seconds=cpu_seconds(os.getpid()) - cpu0,
        reconnects=reconnects,
    )


async def amain() -> None:
    chan = Channel(asyncio.get_running_loop())
    job = (await chan.queue.get())["job"]
    try:
        await hammer(job, chan)
    except Exception as exc:
        chan.emit("error", message=f"{type(exc).__name__}: {exc}")
        raise


def main() -> None:
    raise_nofile()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(amain())


if __name__ == "__main__":
    main()
