"""The turn writer, on real loopback connections.

Each test opens real TCP connections to a sink server that records what
arrives; a transport is wrapped only to count its ``write`` calls (the
sends the writer makes), never to fake one."""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvloop
from structlog.testing import capture_logs

from sentry.proxy.turnwrite import SEND_AT, SEND_MANY, TurnWriter


@dataclass
class Sink:
    """What one accepted connection received, and when it ended."""

    data: bytearray = field(default_factory=bytearray)
    ended: asyncio.Event = field(default_factory=asyncio.Event)


class Counting:
    """A real transport whose ``write`` calls are counted."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.inner = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.inner.write(data)

    def is_closing(self) -> bool:
        return self.inner.is_closing()

    def abort(self) -> None:
        self.inner.abort()

    def close(self) -> None:
        self.inner.close()


class Broken(Counting):
    def write(self, data: bytes) -> None:
        raise RuntimeError("a transport's bug")


@asynccontextmanager
async def sink_server() -> AsyncIterator[tuple[int, list[Sink]]]:
    """A server on a kernel-chosen port recording what each connection sends."""
    sinks: list[Sink] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sink = Sink()
        sinks.append(sink)
        try:
            while chunk := await reader.read(65536):
                sink.data += chunk
        except ConnectionError:
            pass
        finally:
            sink.ended.set()
            writer.close()

    srv = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    async with srv:
        yield port, sinks


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, list[Sink]]]:
    async with sink_server() as srv:
        yield srv


async def connect(port: int, sinks: list[Sink]) -> Counting:
    """A connection to the sink server, once it was accepted (so ``sinks[-1]`` is its)."""
    loop = asyncio.get_running_loop()
    accepted = len(sinks) + 1
    transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
    await until(lambda: len(sinks) == accepted)
    return Counting(transport)


async def one_turn() -> None:
    """Let the loop run one turn (the writer's flush is queued for the next)."""
    await asyncio.sleep(0)


async def until(cond: Any) -> None:
    while not cond():
        await asyncio.sleep(0.001)


async def test_a_turns_writes_leave_together_in_order(server: tuple[int, list[Sink]]) -> None:
    port, sinks = server
    a, b = await connect(port, sinks), await connect(port, sinks)
    writer = TurnWriter()
    writer.write(a, b"one ")
    writer.write(b, b"x")
    writer.write(a, b"two ")
    writer.write(a, b"")  # nothing to send: not queued
    writer.write(a, b"three")
    assert a.writes == [] and b.writes == []  # nothing sent within the turn
    assert writer.waiting(a) == 13
    await one_turn()
    assert a.writes == [b"one two three"] and b.writes == [b"x"]  # one send each
    assert writer.waiting(a) == 0
    await until(lambda: bytes(sinks[0].data) == b"one two three" and sinks[1].data == b"x")
    a.close()
    b.close()


async def test_the_next_turns_writes_are_the_next_send(server: tuple[int, list[Sink]]) -> None:
    port, sinks = server
    a = await connect(port, sinks)
    writer = TurnWriter()
    writer.write(a, b"first")
    await one_turn()
    writer.write(a, b"second")
    await one_turn()
    assert a.writes == [b"first", b"second"]
    await until(lambda: sinks and bytes(sinks[0].data) == b"firstsecond")
    a.close()


async def test_a_large_write_leaves_at_once_behind_what_waits(
    server: tuple[int, list[Sink]],
) -> None:
    port, sinks = server
    a = await connect(port, sinks)
    writer = TurnWriter()
    big = b"x" * SEND_AT
    writer.write(a, b"head")
    writer.write(a, big)
    assert a.writes == [b"head" + big]  # at once, so flow control sees it as before
    assert writer.waiting(a) == 0
    writer.write(a, big)  # nothing waits: sent as it is
    assert a.writes[1:] == [big]
    writer.write(a, b"tail")
    await one_turn()
    assert a.writes[2] == b"tail"
    await until(lambda: sinks and len(sinks[0].data) == 2 * SEND_AT + 8)
    assert bytes(sinks[0].data) == b"head" + big + big + b"tail"
    a.close()


async def test_a_burst_over_many_transports_leaves_in_batches_as_written(
    server: tuple[int, list[Sink]],
) -> None:
    """A thousand answers written in one pass (a bulk block) do not all wait
    for the last: every ``SEND_MANY`` transports waiting are sent at once."""
    port, sinks = server
    real = await connect(port, sinks)
    # distinct keys for the writer, one socket underneath (its bytes show the order)
    views = [Counting(real.inner) for _ in range(SEND_MANY + 1)]
    writer = TurnWriter()
    for i, view in enumerate(views[: SEND_MANY - 1]):
        writer.write(view, b"%d," % i)
    assert all(v.writes == [] for v in views)
    writer.write(views[SEND_MANY - 1], b"%d," % (SEND_MANY - 1))
    assert [v.writes for v in views[:SEND_MANY]] == [[b"%d," % i] for i in range(SEND_MANY)]
    writer.write(views[SEND_MANY], b"last")
    assert views[SEND_MANY].writes == []  # a new batch: the turn's end
    await one_turn()
    assert views[SEND_MANY].writes == [b"last"]
    expected = b"".join(b"%d," % i for i in range(SEND_MANY)) + b"last"
    await until(lambda: bytes(sinks[0].data) == expected)
    real.close()


async def test_flush_then_close_sends_what_waits_first(server: tuple[int, list[Sink]]) -> None:
    port, sinks = server
    a = await connect(port, sinks)
    writer = TurnWriter()
    writer.write(a, b"the answer, then the end")
    writer.flush(a)
    a.close()
    await until(lambda: sinks and sinks[0].ended.is_set())
    assert bytes(sinks[0].data) == b"the answer, then the end"
    await one_turn()  # the queued flush finds nothing left for it
    assert a.writes == [b"the answer, then the end"]


async def test_an_aborted_transports_bytes_are_dropped(server: tuple[int, list[Sink]]) -> None:
    port, sinks = server
    a, b = await connect(port, sinks), await connect(port, sinks)
    writer = TurnWriter()
    writer.write(a, b"never sent")
    writer.write(b, b"sent")
    a.abort()
    with capture_logs() as logs:
        await one_turn()
    assert a.writes == [] and b.writes == [b"sent"]
    assert logs == []
    await sinks[0].ended.wait()
    assert bytes(sinks[0].data) == b""  # the aborted one: nothing, then the end
    await until(lambda: sinks[1].data == b"sent")
    b.close()


async def test_a_transport_lost_before_the_turns_end_is_skipped() -> None:
    """The peer resets the connection; the write after that is skipped quietly
    (asyncio would log a warning for every write to a lost socket)."""
    loop = asyncio.get_running_loop()
    lost = asyncio.Event()

    class Proto(asyncio.Protocol):
        def connection_lost(self, exc: BaseException | None) -> None:
            lost.set()

    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    transport, _ = await loop.create_connection(Proto, "127.0.0.1", listener.getsockname()[1])
    peer, _ = await loop.sock_accept(listener)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()  # a reset
    listener.close()
    counted = Counting(transport)
    writer = TurnWriter()
    writer.write(counted, b"to a phone that left")
    counted.inner.write(b"probe")  # asyncio's own write finds the reset
    await lost.wait()
    assert transport.is_closing()
    writer.write(counted, b"more")
    with capture_logs() as logs:
        await one_turn()
    assert counted.writes == [] and logs == []


async def test_a_failing_write_does_not_hold_the_others(server: tuple[int, list[Sink]]) -> None:
    port, sinks = server
    a = await connect(port, sinks)
    bad = Broken((await connect(port, sinks)).inner)
    await until(lambda: len(sinks) == 2)
    writer = TurnWriter()
    writer.write(bad, b"x")
    writer.write(a, b"y")
    with capture_logs() as logs:
        await one_turn()
    assert a.writes == [b"y"]
    assert bad.inner.is_closing()  # aborted
    assert [e["event"] for e in logs] == ["write_failed"]
    a.close()


@pytest.mark.parametrize("seed", range(6))
async def test_any_mix_of_writes_turns_and_sizes_keeps_each_stream(
    server: tuple[int, list[Sink]], seed: int
) -> None:
    port, sinks = server
    rnd = random.Random(seed)
    conns = [await connect(port, sinks) for _ in range(3)]
    writer = TurnWriter()
    sent: list[bytearray] = [bytearray() for _ in conns]
    for step in range(200):
        i = rnd.randrange(len(conns))
        size = rnd.choice([1, 7, 300, SEND_AT - 1, SEND_AT, SEND_AT + 5])
        data = bytes([65 + i]) + step.to_bytes(2, "big") + rnd.randbytes(size)
        writer.write(conns[i], data)
        sent[i] += data
        if rnd.random() < 0.2:
            await one_turn()
    for c in conns:
        writer.flush(c)
        c.close()
    await until(lambda: all(s.ended.is_set() for s in sinks))
    assert [bytes(s.data) for s in sinks] == [bytes(b) for b in sent]


def test_the_same_on_uvloop() -> None:
    """``gateway.event_loop: uvloop``: its transports are not asyncio's classes."""

    async def main() -> None:
        async with sink_server() as srv:
            await test_a_turns_writes_leave_together_in_order(srv)
        async with sink_server() as srv:
            await test_an_aborted_transports_bytes_are_dropped(srv)
        async with sink_server() as srv:
            await test_a_large_write_leaves_at_once_behind_what_waits(srv)
        await test_a_transport_lost_before_the_turns_end_is_skipped()
        for seed in range(2):
            async with sink_server() as srv:
                await test_any_mix_of_writes_turns_and_sizes_keeps_each_stream(srv, seed)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
