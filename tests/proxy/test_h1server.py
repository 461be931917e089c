"""The device listener's own HTTP/1.1 server, driven over real sockets.

Each test starts a ``DeviceServer`` behind the connection gate on a loopback
port with a handler of its own, and talks to it with raw bytes: what is
pinned here is the connection's behaviour (keep-alive, dropped bodies,
streamed answers, errors, hang-ups, shutdown), not the gateway's decisions
(``test_gateway_*`` drive the whole gateway through the same server).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from sentry.aio import create_task
from sentry.observability.metrics import Metrics
from sentry.proxy import h1server
from sentry.proxy.connections import GatedSite
from sentry.proxy.guard import ConnectionLimits
from sentry.proxy.h1message import DISCARD_LIMIT, DeviceRequest, answer_head
from sentry.proxy.h1request import Limits
from sentry.proxy.h1server import DeviceRunner, DeviceServer
from sentry.testing.logs import captured_log_output
from sentry.testing.raw_client import RawConnection, request_bytes

Handler = Callable[[DeviceRequest], Awaitable[web.StreamResponse]]


@dataclass
class Served:
    url: str
    runner: DeviceRunner
    registry: CollectorRegistry

    def sample(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)


@contextlib.asynccontextmanager
async def serve(
    handler: Handler, parser: Limits | None = None, grace: float = 5.0
) -> AsyncIterator[Served]:
    registry = CollectorRegistry()
    runner = DeviceRunner(DeviceServer(handler, parser or Limits()), shutdown_timeout=grace)
    await runner.setup()
    site = GatedSite(
        runner,
        "127.0.0.1",
        0,
        limits=ConnectionLimits(),
        metrics=Metrics(registry),
        listener="devices",
        max_connections=32,
    )
    try:
        await site.start()
        yield Served(f"http://127.0.0.1:{site.port}", runner, registry)
    finally:
        await runner.cleanup()


async def ok(request: DeviceRequest) -> web.StreamResponse:
    """Answers without reading the body (as a refusal does)."""
    return web.Response(status=200, body=request.raw_path.encode())


async def test_an_unread_body_is_dropped_and_the_connection_serves_the_next_request() -> None:
    """The first body is still arriving when its answer is written: the rest
    of it is read and dropped, then the next request is served."""
    first = request_bytes("POST", "/a", [], b"x" * 10_000)
    second = request_bytes("POST", "/b", [], b"y" * 10_000)
    async with serve(ok) as s, await RawConnection.open(s.url) as conn:
        await conn.send(first[:-5000])
        answers = [await conn.response()]
        await conn.send(first[-5000:] + second)
        answers.append(await conn.response())
    assert [(a.status, a.body) for a in answers] == [(200, b"/a"), (200, b"/b")]
    assert all(a.header("Connection") is None for a in answers)


async def test_an_unread_body_over_the_discard_limit_ends_the_connection() -> None:
    head = request_bytes("POST", "/a", [("Content-Length", str(10 * DISCARD_LIMIT))])
    async with serve(ok) as s, await RawConnection.open(s.url) as conn:
        await conn.send(head + b"z" * 1000)
        answer = await conn.response()
        assert (answer.status, answer.header("Connection")) == (200, "close")
        assert await conn.closed_by_peer()


async def test_an_unread_chunked_body_is_dropped_only_up_to_the_limit() -> None:
    chunk = b"%x\r\n%b\r\n" % (8192, b"c" * 8192)
    head = request_bytes("POST", "/a", [("Transfer-Encoding", "chunked")])
    async with serve(ok) as s, await RawConnection.open(s.url) as conn:
        await conn.send(head + chunk)
        assert (await conn.response()).status == 200
        await conn.trickle(chunk * (DISCARD_LIMIT // 8192 + 2), step=8192 + 8, pause=0)
        assert await conn.closed_by_peer()


async def streamed(request: DeviceRequest) -> web.StreamResponse:
    response = web.StreamResponse(status=200)
    length = request.headers.get("X-Length")
    if length is not None:
        response.headers["Content-Length"] = length
    await request.prepare(response)
    for part in (b"one,", b"two,", b"three"):
        await request.write(part)
    await request.write_eof()
    return response


async def test_a_streamed_answer_is_chunked_on_http_1_1_and_the_connection_kept() -> None:
    async with serve(streamed) as s, await RawConnection.open(s.url) as conn:
        await conn.send(request_bytes("POST", "/", []) * 2)
        answers = await conn.responses(2)
    for answer in answers:
        assert answer.header("Transfer-Encoding") == "chunked"
        assert answer.body == b"one,two,three"


async def test_a_streamed_answer_on_http_1_0_ends_with_the_connection() -> None:
    async with serve(streamed) as s, await RawConnection.open(s.url) as conn:
        data = request_bytes("POST", "/", [("Connection", "keep-alive")], version="HTTP/1.0")
        await conn.send(data)
        raw = await asyncio.wait_for(conn.reader.read(), 10)  # to the close
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK\r\n")
    assert b"Transfer-Encoding" not in head and b"keep-alive" not in head
    assert body == b"one,two,three"


async def test_a_streamed_answer_keeps_to_its_declared_length() -> None:
    async with serve(streamed) as s:
        async with await RawConnection.open(s.url) as conn:
            await conn.send(request_bytes("POST", "/", [("X-Length", "13")]))
            answer = await conn.response()
            assert (answer.header("Content-Length"), answer.body) == ("13", b"one,two,three")
        async with await RawConnection.open(s.url) as conn:  # the handler writes more
            await conn.send(request_bytes("POST", "/", [("X-Length", "5")]))
            raw = await asyncio.wait_for(conn.reader.read(), 10)
            assert raw.endswith(b"\r\n\r\none,")  # cut, never more than declared


async def test_http_1_0_keep_alive_is_honoured_and_said() -> None:
    data = request_bytes("POST", "/k", [("Connection", "keep-alive")], version="HTTP/1.0")
    async with serve(ok) as s, await RawConnection.open(s.url) as conn:
        await conn.send(data * 2)
        answers = await conn.responses(2)
    assert [a.header("Connection") for a in answers] == ["keep-alive", "keep-alive"]


async def test_answers_carry_a_date_and_no_server_header() -> None:
    async with serve(ok) as s, await RawConnection.open(s.url) as conn:
        await conn.send(request_bytes("POST", "/", []))
        answer = await conn.response()
    assert answer.header("Date") is not None and answer.header("Date").endswith(" GMT")
    assert answer.header("Server") is None


async def test_an_absolute_form_target_is_served_as_its_path_and_query() -> None:
    async def echo(request: DeviceRequest) -> web.StreamResponse:
        text = f"{request.path}|{request.query_string}|{request.path_qs}"
        return web.Response(body=text.encode())

    target = "http://gw.example/Microsoft-Server-Active%53ync?Cmd=Ping&User=a%40b"
    async with serve(echo) as s, await RawConnection.open(s.url) as conn:
        await conn.send(request_bytes("POST", target, []))
        answer = await conn.response()
    assert answer.body == (
        b"/Microsoft-Server-ActiveSync|Cmd=Ping&User=a%40b"
        b"|/Microsoft-Server-Active%53ync?Cmd=Ping&User=a%40b"
    )


async def test_a_handler_that_raises_gets_a_fixed_500_and_the_connection_ends() -> None:
    async def broken(request: DeviceRequest) -> web.StreamResponse:
        raise RuntimeError("secret detail")

    with captured_log_output() as log:
        async with serve(broken) as s, await RawConnection.open(s.url) as conn:
            await conn.send(request_bytes("POST", "/", []) * 2)
            answer = await conn.response()
            assert (answer.status, answer.body) == (500, b"internal server error\n")
            assert answer.header("Connection") == "close"
            assert await conn.closed_by_peer()
    assert [e["event"] for e in log.events()].count("unhandled_error") == 1


async def test_an_answer_header_with_a_line_break_is_never_written() -> None:
    async def injected(request: DeviceRequest) -> web.StreamResponse:
        response = web.Response(body=b"x")
        response.headers["X-A"] = "a\r\nSet-Cookie: stolen=1"
        return response

    with captured_log_output() as log:
        async with serve(injected) as s, await RawConnection.open(s.url) as conn:
            await conn.send(request_bytes("POST", "/", []))
            raw = await asyncio.wait_for(conn.reader.read(), 10)
    assert b"Set-Cookie" not in raw
    assert "unhandled_error" in [e["event"] for e in log.events()]


async def test_a_device_that_hangs_up_cancels_its_handler_where_it_waits() -> None:
    waiting, cancelled = asyncio.Event(), asyncio.Event()

    async def held(request: DeviceRequest) -> web.StreamResponse:
        waiting.set()
        try:
            await asyncio.Event().wait()  # a held Ping's wait on the backend
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return web.Response()

    async with serve(held) as s:
        conn = await RawConnection.open(s.url)
        await conn.send(request_bytes("POST", "/", []))
        await asyncio.wait_for(waiting.wait(), 10)
        await conn.close()
        await asyncio.wait_for(cancelled.wait(), 10)


async def test_a_trickled_head_is_not_checked_again_for_every_piece(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each check of an incomplete head reads all of it: checked after every
    1 KiB piece, a 300 KiB head would cost 300 checks of up to 300 KiB."""
    calls = 0
    real = h1server.parse_head

    def counted(buf: bytes | bytearray, limits: Limits, start: int = 0) -> object:
        nonlocal calls
        calls += 1
        return real(buf, limits, start)

    monkeypatch.setattr(h1server, "parse_head", counted)
    fields = [(f"X-Pad-{i}", "v" * 3000) for i in range(100)]
    data = request_bytes("POST", "/", fields)
    assert len(data) > 300_000
    async with serve(ok, Limits(fields=110)) as s, await RawConnection.open(s.url) as conn:
        await conn.trickle(data, step=1024, pause=0)
        assert (await conn.response()).status == 200
    assert calls < 40, calls


async def test_shutdown_closes_idle_connections_and_lets_the_answer_in_flight_finish() -> None:
    release, started = asyncio.Event(), asyncio.Event()

    async def slow(request: DeviceRequest) -> web.StreamResponse:
        if request.path == "/slow":
            started.set()
            await release.wait()
        return web.Response(body=b"done")

    async with serve(slow) as s:
        idle = await RawConnection.open(s.url)
        await idle.send(request_bytes("POST", "/fast", []))
        assert (await idle.response()).status == 200
        busy = await RawConnection.open(s.url)
        await busy.send(request_bytes("POST", "/slow", []))
        await asyncio.wait_for(started.wait(), 10)
        cleanup = create_task(s.runner.cleanup(), name="cleanup")
        assert await idle.closed_by_peer()
        assert not cleanup.done()
        release.set()
        answer = await busy.response()
        assert (answer.status, answer.body, answer.header("Connection")) == (200, b"done", "close")
        await asyncio.wait_for(cleanup, 10)
        await idle.close()
        await busy.close()


async def test_a_malformed_head_is_answered_counted_and_the_connection_closed() -> None:
    async with serve(ok) as s, await RawConnection.open(s.url) as conn:
        await conn.send(b"POST / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        answer = await conn.response()
        assert (answer.status, answer.body) == (400, b"bad request\n")
        assert await conn.closed_by_peer()
        assert s.sample("sentry_bad_requests_total", kind="http:bad_header") == 1


async def test_a_broken_chunked_body_left_unread_ends_the_connection_after_the_answer() -> None:
    """Nothing after a broken chunked body can be framed: the answer says
    ``Connection: close`` and the connection ends (it is not kept, paused,
    waiting for a body end that will never come)."""
    head = request_bytes("POST", "/a", [("Transfer-Encoding", "chunked")])
    async with serve(ok) as s, await RawConnection.open(s.url) as conn:
        await conn.send(head + b"5\r\nhello\r\nzz\r\n" + request_bytes("POST", "/b", []))
        answer = await conn.response()
        assert (answer.status, answer.header("Connection")) == (200, "close")
        assert await conn.closed_by_peer()


@pytest.mark.parametrize(
    ("size", "total", "past"),
    [
        (256 * 1024, 200, 1),  # sent at once (turnwrite.SEND_AT): paused by its own write
        # waits for the loop turn's end: the pause comes when the turn's writes go
        # out, so one more answer may enter the socket's buffer past it
        (8 * 1024, 3000, 2),
    ],
    ids=["large", "small"],
)
async def test_a_device_that_pipelines_without_reading_is_not_answered_ahead(
    size: int, total: int, past: int
) -> None:
    """The next pipelined request is served only once the device reads the
    answer before it: a device that never reads cannot make the gateway
    queue answers without bound (the send clock then ends the connection).
    ``total`` answers are more than the kernel's buffers hold."""
    calls = 0
    body = b"a" * size

    async def answer(request: DeviceRequest) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        return web.Response(body=body)

    async with serve(answer) as s, await RawConnection.open(s.url) as conn:
        await conn.send(request_bytes("POST", "/", []) * total)
        server = s.runner.server
        assert isinstance(server, DeviceServer)

        def waiting() -> bool:  # an answer is waiting for the device to read
            return any(c._drain is not None for c in server.connections)

        async with asyncio.timeout(30):
            while not waiting():
                await asyncio.sleep(0.01)
        [connection] = server.connections
        assert connection.transport is not None
        assert connection.transport.get_write_buffer_size() <= 64 * 1024 + past * (size + 1024)
        assert calls < total


async def test_bytes_pipelined_behind_a_held_request_stop_the_reading() -> None:
    """While a request is served (a held Ping waits for up to an hour), what
    the device sends after it is buffered only up to ``PIPELINE_HIGH`` (plus
    the one read that crossed it); then the connection stops reading."""
    release = asyncio.Event()

    async def held(request: DeviceRequest) -> web.StreamResponse:
        await release.wait()
        return web.Response(body=b"held")

    async with serve(held) as s, await RawConnection.open(s.url) as conn:
        conn.writer.write(request_bytes("POST", "/", []) + b"x" * 4_000_000)
        server = s.runner.server
        assert isinstance(server, DeviceServer)
        async with asyncio.timeout(10):
            while not any(c._paused for c in server.connections):
                await asyncio.sleep(0.01)
        [connection] = server.connections
        assert len(connection._buf) <= h1server.PIPELINE_HIGH + 256 * 1024
        release.set()
        assert (await conn.response()).body == b"held"


@pytest.mark.parametrize(
    ("name", "value"),
    [("X-A", "a\rb"), ("X-A", "a\nb"), ("X-A", "a\r\nB: c"), ("X-\nA", "a"), ("X-\rA", "a")],
)
def test_answer_head_refuses_a_line_break_in_any_field(name: str, value: str) -> None:
    response = web.Response(body=b"x")
    response.headers[name] = value
    with pytest.raises(ValueError, match="line break"):
        answer_head((1, 1), response, "Content-Length: 1\r\n", True)


def test_answer_head_of_clean_fields_has_one_crlf_per_line() -> None:
    response = web.Response(body=b"x", reason="Fine")
    response.headers["X-A"] = "a"
    head = answer_head((1, 0), response, "", False)
    assert head.startswith(b"HTTP/1.0 200 Fine\r\nX-A: a\r\n")
    assert head.endswith(b"\r\n\r\n") and b"Date: " in head
    assert head.count(b"\r\n") == 4  # status, X-A, Date, the blank line
