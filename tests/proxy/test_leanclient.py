"""The lean client for held long polls, against scripted servers on loopback.

Each server is a real socket on a kernel-chosen port that reads requests and
writes the bytes a test scripts, counting connections and requests, so a
test waits for what the server saw instead of sleeping."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvloop
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict
from yarl import URL

from sentry.proxy import leanclient
from sentry.proxy.errors import ConnectFailed, UpstreamBroken, UpstreamConnectError, UpstreamTimeout
from sentry.proxy.health import classify
from sentry.proxy.leanclient import LeanClient, LeanResponse
from sentry.proxy.leanconn import Conn
from sentry.testing.faulty import refusing_port

# request number -> answer bytes (None: say nothing; b"": close the connection unanswered)
Script = Callable[[int], bytes | None]


@dataclass
class Scripted:
    url: URL
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)  # a client closed on us


@asynccontextmanager
async def scripted(script: Script, *, close_after: bool = False) -> AsyncIterator[Scripted]:
    handlers: set[asyncio.Task[Any]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        state.writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                state.requests.append(head + body)
                answer = script(len(state.requests))
                if answer == b"":
                    return
                if answer is not None:
                    writer.write(answer)
                    await writer.drain()
                if close_after:
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            state.closed.set()
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    state = Scripted(URL(f"http://127.0.0.1:{port}"))
    try:
        yield state
    finally:
        server.close()
        # end the handlers still reading: none is left to the garbage collector
        # with its connection open once the loop has closed
        for writer in state.writers:
            writer.close()
        if handlers:
            await asyncio.wait(handlers, timeout=5)


def ok(body: bytes = b"pong", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (len(body), extra) + body


async def ask(
    client: LeanClient,
    url: URL,
    body: bytes = b"ping",
    read_timeout: float = 10.0,
    method: str = "POST",
) -> LeanResponse:
    headers = CIMultiDict({"Authorization": "Basic eA==", "Content-Length": str(len(body))})
    return await client.request(
        url, method, "/Microsoft-Server-ActiveSync?Cmd=Ping&User=a b", headers, body,
        server="backend", connect_timeout=5.0, read_timeout=read_timeout,
    )  # fmt: skip


async def test_request_bytes_answer_and_reuse_of_the_connection() -> None:
    client = LeanClient(verify=True)
    async with scripted(lambda n: ok(b"pong%d" % n, b"X-Seen: yes\r\n")) as srv:
        for n in (1, 2):
            resp = await ask(client, srv.url)
            assert (resp.status, resp.reason, resp.headers["X-Seen"]) == (200, "OK", "yes")
            assert resp.content_length == 5
            assert await resp.read() == b"pong%d" % n
            resp.release()
            assert client.idle == 1
        assert srv.connections == 1  # the second request reused the parked connection
        port = srv.url.port
        assert port is not None
        assert srv.requests[0] == (
            b"POST /Microsoft-Server-ActiveSync?Cmd=Ping&User=a+b HTTP/1.1\r\n"
            b"Host: 127.0.0.1:%d\r\nAuthorization: Basic eA==\r\nContent-Length: 4\r\n\r\nping"
            % port
        )
    client.close()


def test_the_same_on_uvloop() -> None:
    """``gateway.event_loop: uvloop``: its transports are not asyncio's classes."""

    async def main() -> None:
        await test_request_bytes_answer_and_reuse_of_the_connection()
        await test_a_cancelled_wait_closes_the_backend_connection()
        await test_no_answer_within_the_read_timeout()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


async def test_chunked_answer_streams_and_is_reused() -> None:
    body = b"x" * 700_000  # above the buffer limit: reading pauses and resumes
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunked += b"".join(
        b"%x\r\n" % 70_000 + body[i : i + 70_000] + b"\r\n" for i in range(0, len(body), 70_000)
    )
    chunked += b"0\r\n\r\n"
    client = LeanClient(verify=True)
    async with scripted(lambda n: chunked) as srv:
        resp = await ask(client, srv.url)
        assert resp.content_length is None
        got = [c async for c in resp.content.iter_chunked(65536)]
        assert b"".join(got) == body and max(map(len, got)) <= 65536
        assert resp.content.at_eof()
        resp.release()
        assert client.idle == 1
    client.close()


async def test_a_slow_reader_holds_back_the_backend() -> None:
    """The device reads slowly: the client stops reading from the backend once
    ``BUFFER_LIMIT`` bytes wait, so memory stays bounded, and the backend's
    writes back up (32 MiB is more than loopback's socket buffers take);
    everything arrives once the reader goes on."""
    body = bytes(range(256)) * (32 * 1024 * 1024 // 256)
    client = LeanClient(verify=True)
    async with scripted(lambda n: ok(body)) as srv:
        resp = await ask(client, srv.url)
        first = await resp.content.read(65536)
        async with asyncio.timeout(30):
            while not resp.held_back:
                await asyncio.sleep(0.005)
        assert resp.buffered <= 2 * leanclient.BUFFER_LIMIT  # the limit plus one socket read
        assert srv.writers[0].transport.get_write_buffer_size() > 0  # the backend waits
        rest = [c async for c in resp.content.iter_chunked(65536)]
        assert first + b"".join(rest) == body
    client.close()


async def test_reading_a_large_body_whole_is_not_held_back() -> None:
    """``read()`` of the whole body turns the flow control off (it would wait
    on itself until the read timeout); a 3 MiB answer arrives."""
    body = b"x" * (3 * 1024 * 1024)
    client = LeanClient(verify=True)
    async with scripted(lambda n: ok(body)) as srv:
        resp = await ask(client, srv.url, read_timeout=10.0)
        assert await resp.read() == body
        resp.release()
        assert client.idle == 1
    client.close()


@pytest.mark.parametrize(
    "answer",
    [
        ok(extra=b"Connection: close\r\n"),
        b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\npong",
        ok() + b"trailing garbage",
    ],
)
async def test_answers_that_spoil_the_connection_are_not_reused(answer: bytes) -> None:
    client = LeanClient(verify=True)
    async with scripted(lambda n: answer) as srv:
        resp = await ask(client, srv.url)
        assert await resp.read() == b"pong"
        resp.release()
        assert client.idle == 0
        await asyncio.wait_for(srv.closed.wait(), 10)
    client.close()


async def test_an_unread_body_is_not_reused() -> None:
    client = LeanClient(verify=True)
    async with scripted(lambda n: ok()) as srv:
        resp = await ask(client, srv.url)
        resp.release()  # the body never read
        assert client.idle == 0
        resp2 = await ask(client, srv.url)
        assert await resp2.read() == b"pong"
        resp2.release()
        assert srv.connections == 2
    client.close()


async def test_a_body_read_to_the_close() -> None:
    client = LeanClient(verify=True)
    async with scripted(lambda n: b"HTTP/1.1 200 OK\r\n\r\nuntil the end", close_after=True) as srv:
        resp = await ask(client, srv.url)
        assert await resp.read() == b"until the end"
        resp.release()
        assert client.idle == 0
    client.close()


async def test_an_idle_connection_the_backend_closed_is_not_used_again() -> None:
    client = LeanClient(verify=True)
    async with scripted(lambda n: ok(), close_after=True) as srv:
        resp = await ask(client, srv.url)
        assert await resp.read() == b"pong"
        resp.release()
        async with asyncio.timeout(10):  # the backend's FIN ends the parked connection
            while client.idle:
                await asyncio.sleep(0.005)
        resp = await ask(client, srv.url)
        assert await resp.read() == b"pong"
        assert srv.connections == 2
        resp.release()
    client.close()


async def test_an_answer_cut_short_is_broken() -> None:
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this"
    client = LeanClient(verify=True)
    async with scripted(lambda n: cut, close_after=True) as srv:
        resp = await ask(client, srv.url)
        with pytest.raises(UpstreamBroken, match="connection broke") as info:
            await resp.read()
        assert info.value.server == "backend"
    client.close()


async def test_a_malformed_head_is_broken() -> None:
    client = LeanClient(verify=True)
    async with scripted(lambda n: b"SMTP ready\r\n\r\n") as srv:
        with pytest.raises(UpstreamBroken, match="status line"):
            await ask(client, srv.url)
        await asyncio.wait_for(srv.closed.wait(), 10)
        assert client.idle == 0
    client.close()


async def test_no_answer_within_the_read_timeout() -> None:
    client = LeanClient(verify=True)
    async with scripted(lambda n: None) as srv:
        with pytest.raises(UpstreamTimeout):
            await ask(client, srv.url, read_timeout=0.2)
        await asyncio.wait_for(srv.closed.wait(), 10)
    client.close()


async def test_a_refused_connection_is_a_connect_error_the_health_check_reads() -> None:
    client = LeanClient(verify=True)
    with refusing_port() as sock:
        url = URL(f"http://127.0.0.1:{sock.getsockname()[1]}")
        with pytest.raises(UpstreamConnectError) as info:
            await ask(client, url)
    cause = info.value.__cause__
    assert isinstance(cause, ConnectFailed)
    assert classify(cause).kind == "refused"
    assert classify(ConnectFailed("h", TimeoutError())).kind == "timeout"
    verify = ssl.SSLCertVerificationError(1, "certificate verify failed")
    assert classify(ConnectFailed("h", verify)).kind == "tls_verify"
    assert classify(ConnectFailed("h", ssl.SSLError(1, "handshake"))).kind == "tls"


async def test_abandoned_connections_close_later_in_one_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bulk revocation's cancelled requests do not close their sockets among
    the answers: they read no more and close together later (``retire``)."""
    monkeypatch.setattr(leanclient, "RETIRE_SECONDS", 3600.0)
    client = LeanClient(verify=True)
    async with scripted(lambda n: None) as srv:
        tasks = [asyncio.ensure_future(ask(client, srv.url)) for _ in range(3)]
        async with asyncio.timeout(10):
            while len(srv.requests) < 3:
                await asyncio.sleep(0.005)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert (client.retired, client.open) == (3, 3)  # not closed yet
        assert not srv.closed.is_set()
        client.close()  # shutdown closes the retired ones too
        await asyncio.wait_for(srv.closed.wait(), 10)
        assert (client.retired, client.idle) == (0, 0)


async def test_a_cancelled_wait_closes_the_backend_connection() -> None:
    client = LeanClient(verify=True)
    async with scripted(lambda n: None) as srv:
        task = asyncio.ensure_future(ask(client, srv.url))
        async with asyncio.timeout(10):
            while not srv.requests:
                await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(srv.closed.wait(), 10)  # the backend sees the connection end
        assert client.idle == 0 and client.open == 0
    client.close()


async def test_a_control_character_in_a_header_is_refused_before_sending() -> None:
    client = LeanClient(verify=True)
    async with scripted(lambda n: ok()) as srv:
        headers = CIMultiDict({"X-Bad": "a\r\nInjected: yes"})
        with pytest.raises(UpstreamBroken, match="control character"):
            await client.request(srv.url, "POST", "/", headers, b"", server="backend",
                                 connect_timeout=5.0, read_timeout=5.0)  # fmt: skip
        assert srv.connections == 0
    client.close()


@pytest.mark.parametrize(("method", "retried"), [("OPTIONS", True), ("POST", False)])
async def test_a_reused_connection_closed_unanswered(method: str, retried: bool) -> None:
    """The backend closed a parked connection just as a request went out on it:
    an idempotent request is sent again on a new connection, a POST is not."""
    client = LeanClient(verify=True)
    async with scripted(lambda n: b"" if n == 2 else ok()) as srv:
        resp = await ask(client, srv.url, method=method)
        assert await resp.read() == b"pong"
        resp.release()
        assert client.idle == 1
        if retried:
            resp = await ask(client, srv.url, method=method)
            assert await resp.read() == b"pong"
            resp.release()
        else:
            with pytest.raises(UpstreamBroken):
                await ask(client, srv.url, method=method)
        assert srv.connections == (2 if retried else 1)
        assert len(srv.requests) == (3 if retried else 2)
    client.close()


_SERVERS = ("http://127.0.0.1:8080", "https://mail.example.com/", "http://u:p@h:81/eas/x?q=1")
_PLAIN_CHARS = st.sampled_from("aZ09-._~/?=&+")
_TARGET_CHARS = _PLAIN_CHARS | st.sampled_from("%#:@;, []") | st.characters()


@given(
    st.text(_PLAIN_CHARS, max_size=40) | st.text(_TARGET_CHARS, max_size=40),
    st.sampled_from(_SERVERS),
)
def test_request_target_is_what_yarl_makes_of_it(tail: str, server: str) -> None:
    """The request line's target, Host and origin are exactly what
    ``url.join(URL(path_qs))`` gives (what aiohttp's client sent), whether
    the plain fast path takes the target or yarl does."""
    url, path_qs = URL(server), "/" + tail
    try:
        target = url.join(URL(path_qs))
    except (ValueError, IndexError):
        return  # yarl refuses it; the device side's parser never passes such a target
    origin = (target.scheme, target.raw_host or "", target.port or 0)
    expected = (origin, target.host_port_subcomponent or "", target.raw_path_qs)
    assert leanclient.request_target(url, path_qs) == expected


def test_a_target_yarl_changes_is_yarl_s() -> None:
    """The cases the fast path must leave to yarl: an empty query, a dot
    segment, an escape, an authority."""
    url = URL("http://h")
    for path_qs, sent in (
        ("/a?", "/a"),
        ("/a/../b?x=1", "/b?x=1"),
        ("/a?u=%41", "/a?u=A"),
    ):
        assert not leanclient._PLAIN_TARGET.fullmatch(path_qs)
        assert leanclient.request_target(url, path_qs)[2] == sent
    assert not leanclient._PLAIN_TARGET.fullmatch("//evil.example/x")


def test_an_eas_request_target_takes_the_fast_path() -> None:
    plain = "/Microsoft-Server-ActiveSync?Cmd=Sync&User=jdoe&DeviceId=ABC123&DeviceType=iPhone"
    b64 = "/Microsoft-Server-ActiveSync?jRIJBAZBQkMxMjME0gKWSQZpUGhvbmUIEGpkb2VAZXhhbXBsZS5jb20H"
    for path_qs in (plain, b64):
        assert leanclient._PLAIN_TARGET.fullmatch(path_qs)
        origin, host, raw = leanclient.request_target(URL("http://h:81"), path_qs)
        assert (origin, host, raw) == (("http", "h", 81), "h:81", path_qs)
    # an escape is normalised by yarl, so it is not taken as it is
    escaped = "/Microsoft-Server-ActiveSync?Cmd=Sync&User=CORP%5cjdoe"
    assert not leanclient._PLAIN_TARGET.fullmatch(escaped)
    assert leanclient.request_target(URL("http://h"), escaped)[2].endswith("CORP%5Cjdoe")


async def test_a_kept_alive_connection_arms_no_timer_per_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One timer serves the read timeout and the keep-alive: requests on a
    reused connection schedule none once the first is in place."""
    client = LeanClient(verify=True)
    loop = asyncio.get_running_loop()
    scheduled: list[float] = []
    real_call_at = loop.call_at

    def counting(when: float, callback: Callable[..., object], *args: object, **kwargs: Any) -> Any:
        if isinstance(getattr(callback, "__self__", None), Conn):
            scheduled.append(when)
        return real_call_at(when, callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_at", counting)
    async with scripted(lambda n: ok(b"pong%d" % n)) as srv:
        for n in range(1, 21):
            resp = await ask(client, srv.url, read_timeout=60.0)
            assert await resp.read() == b"pong%d" % n
            resp.release()
        assert srv.connections == 1
    assert len(scheduled) <= 2, scheduled  # the first read timer, at most one for idling
    client.close()


async def test_an_idle_connection_is_closed_after_the_keep_alive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The kept timer, due at the read deadline, is brought forward to the
    keep-alive when the connection is parked; a reused one is closed too."""
    monkeypatch.setattr(leanclient, "KEEPALIVE_SECONDS", 0.3)
    client = LeanClient(verify=True)
    async with scripted(lambda n: ok()) as srv:
        for _ in range(2):
            resp = await ask(client, srv.url, read_timeout=60.0)
            await resp.read()
            resp.release()
        assert client.idle == 1
        async with asyncio.timeout(10):  # the client closes it, the backend sees it closed
            while client.idle or not srv.closed.is_set():
                await asyncio.sleep(0.01)
        assert srv.connections == 1
    client.close()


async def test_a_reused_connection_still_times_out() -> None:
    """The timer kept from idling (due later than the read deadline) is
    brought forward: no answer on a reused connection is a read timeout."""
    client = LeanClient(verify=True)
    async with scripted(lambda n: ok() if n == 1 else None) as srv:
        resp = await ask(client, srv.url, read_timeout=60.0)
        await resp.read()
        resp.release()
        started = asyncio.get_running_loop().time()
        with pytest.raises(UpstreamTimeout):
            await ask(client, srv.url, read_timeout=0.3)
        assert asyncio.get_running_loop().time() - started < 5
        assert srv.connections == 1
    client.close()


async def test_bytes_arriving_restart_the_read_timer() -> None:
    """An answer dripping in, each byte within the read timeout but the whole
    longer than it, is read: the timer kept across requests restarts with
    every byte, as aiohttp's ``sock_read`` does."""
    answer = ok(b"slow")
    served = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for n in range(2):  # the first answer at once (the connection is reused), then a drip
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                if n == 0:
                    writer.write(answer)
                    continue
                for i in range(0, len(answer), 8):
                    writer.write(answer[i : i + 8])
                    await writer.drain()
                    await asyncio.sleep(0.1)  # under the 0.3 s read timeout, 0.5 s in all
            await reader.read()
        finally:
            writer.close()
            served.set()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = URL(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
    client = LeanClient(verify=True)
    try:
        first = await ask(client, url, read_timeout=60.0)
        assert await first.read() == b"slow"
        first.release()
        started = asyncio.get_running_loop().time()
        resp = await ask(client, url, read_timeout=0.3)
        assert await resp.read() == b"slow"
        assert asyncio.get_running_loop().time() - started > 0.3  # longer than one timeout
        resp.release()
    finally:
        client.close()
        # the handler sees the client's close and closes its side before the loop ends
        await asyncio.wait_for(served.wait(), 5)
        server.close()


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("backend.example", None),  # a name: resolved (and cached for _DNS_TTL)
        ("127.0.0.256", None),
        ("[backend.example]", None),
    ],
)
async def test_an_ip_address_is_connected_to_without_resolving(
    host: str, address: str | None
) -> None:
    assert leanclient._ip_literal(host) == address
    if address is not None:
        client = LeanClient(verify=True)
        assert await client._addresses(host, 443) == [(address, 443)]
        client.close()
