"""Bounded connections, tested with real slow clients.

The gateway runs with tiny clocks (fractions of a second); each test waits
for a positive signal — the connection closed by the gateway, a counter
moved — with a bounded wait, and never asserts on elapsed time.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sentry.proxy.connections import connection_cap
from sentry.testing.eas_client import EasTestClient, basic_auth
from sentry.testing.gateway import demo_gateway, recording_gateway
from sentry.testing.logs import captured_log_output
from sentry.testing.raw_client import RawConnection, request_bytes
from sentry.testing.recording_backend import RecordingBackend, start_recording_backend

EAS = "/Microsoft-Server-ActiveSync"
FOLDERSYNC_Q = f"{EAS}?Cmd=FolderSync&User=alice&DeviceId=SLOW0001&DeviceType=iPhone"
PING_Q = f"{EAS}?Cmd=Ping&User=alice&DeviceId=SLOW0002&DeviceType=iPhone"
HEADERS = [("Authorization", basic_auth("alice", "secret")), ("MS-ASProtocolVersion", "14.1")]
TINY = 0.3


def gateway_with(tmp_path: Path, backend: RecordingBackend, **connections: Any) -> Any:
    return recording_gateway(tmp_path, backend.url, tls=False, **connections)


async def test_a_head_sent_a_byte_at_a_time_is_cut_off_with_408(
    tmp_path: Path, backend: RecordingBackend
) -> None:
    async with (
        gateway_with(tmp_path, backend, header_timeout_seconds=TINY) as gw,
        await RawConnection.open(gw.url) as conn,
    ):
        trickle = asyncio.ensure_future(
            conn.trickle(request_bytes("POST", FOLDERSYNC_Q, HEADERS), pause=0.02)
        )
        answer = await conn.response()
        assert answer.status == 408
        assert await conn.closed_by_peer()
        await trickle
        assert gw.timeouts("head") == 1
    assert backend.eas_requests() == []


async def test_a_connection_that_never_sends_is_closed_silently(
    tmp_path: Path, backend: RecordingBackend
) -> None:
    async with (
        gateway_with(tmp_path, backend, header_timeout_seconds=TINY) as gw,
        await RawConnection.open(gw.url) as conn,
    ):
        assert await conn.closed_by_peer()
        assert conn.reader.at_eof()
        assert gw.timeouts("head") == 1


async def test_an_idle_keep_alive_connection_is_closed(
    tmp_path: Path, backend: RecordingBackend
) -> None:
    async with (
        gateway_with(tmp_path, backend, idle_timeout_seconds=TINY) as gw,
        await RawConnection.open(gw.url) as conn,
    ):
        await conn.send(request_bytes("POST", FOLDERSYNC_Q, HEADERS))
        assert (await conn.response()).status == 200
        assert await conn.closed_by_peer()
        assert gw.timeouts("idle") == 1 and gw.timeouts("head") == 0


async def test_a_body_that_stops_is_cut_off_and_never_forwarded(
    tmp_path: Path, backend: RecordingBackend
) -> None:
    async with gateway_with(tmp_path, backend, body_timeout_seconds=TINY) as gw:
        for query in (PING_Q, FOLDERSYNC_Q):  # inspected (read whole) and streamed
            async with await RawConnection.open(gw.url) as conn:
                head = request_bytes("POST", query, [*HEADERS, ("Content-Length", "1000")])
                await conn.send(head + b"\x03\x01j\x00")
                assert await conn.closed_by_peer()
        await gw.until(lambda: gw.timeouts("body") == 2)
    assert backend.violations == []
    assert backend.eas_requests() == []  # the streamed one never completed upstream


async def test_a_body_slower_than_the_minimum_rate_is_cut_off_though_bytes_keep_coming(
    tmp_path: Path, backend: RecordingBackend
) -> None:
    settings = {"body_timeout_seconds": 0.5, "body_min_bytes_per_second": 1000}
    async with gateway_with(tmp_path, backend, **settings) as gw:
        async with await RawConnection.open(gw.url) as conn:
            await conn.send(
                request_bytes("POST", FOLDERSYNC_Q, [*HEADERS, ("Content-Length", "100000")])
            )
            trickle = asyncio.ensure_future(conn.trickle(b"x" * 100_000, step=5, pause=0.01))
            assert await conn.closed_by_peer()
            await trickle
        assert gw.timeouts("body") == 1
    assert backend.eas_requests() == []


async def test_a_device_that_stops_reading_its_answer_is_cut_off(tmp_path: Path) -> None:
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 16777216\r\n\r\n" + b"m" * 16_777_216
    empty = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    backend = await start_recording_backend(lambda r: big if r.method == "POST" else empty)
    async with backend, gateway_with(tmp_path, backend, send_timeout_seconds=TINY) as gw:
        loop = asyncio.get_running_loop()
        with socket.socket() as sock:  # a small receive window, and never a read
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            host, port = gw.url.removeprefix("http://").split(":")
            await loop.sock_connect(sock, (host, int(port)))
            await loop.sock_sendall(sock, request_bytes("POST", FOLDERSYNC_Q, HEADERS))
            await gw.until(lambda: gw.timeouts("send") == 1, timeout=30)


async def test_a_held_ping_outlives_every_client_clock(
    tmp_path: Path,
) -> None:
    """With clocks of a second or less a Ping is held until the backend
    answers: the proof that time passed is other connections' timeouts."""
    connector = aiohttp.TCPConnector(force_close=True)
    clocks = {
        "header_timeout_seconds": 1.0,  # the Ping's own head must arrive within it
        "idle_timeout_seconds": TINY,
        "body_timeout_seconds": TINY,
        "send_timeout_seconds": TINY,
    }
    async with (
        demo_gateway(tmp_path, gateway={"tls": {"enabled": False}, "connections": clocks}) as gw,
        aiohttp.ClientSession(connector=connector) as session,
    ):
        client = EasTestClient(session, f"{gw.url}{EAS}", "alice", "secret", device_id="HELD0001")
        await client.provision()
        ping = (
            '<Ping xmlns="Ping"><HeartbeatInterval>600</HeartbeatInterval><Folders><Folder>'
            "<Id>1</Id><Class>Email</Class></Folder></Folders></Ping>"
        )
        held = asyncio.ensure_future(client.post("Ping", ping, timeout=60))
        await gw.until(lambda: gw.gateway.state.longpolls.count() == 1)
        for phase in ("head", "idle"):  # every client clock has run out at least once since
            async with await RawConnection.open(gw.url) as conn:
                if phase == "idle":
                    await conn.send(request_bytes("OPTIONS", f"{EAS}?User=alice", []))
                    await conn.response()
                before = gw.timeouts(phase)
                assert await conn.closed_by_peer()
                await gw.until(lambda phase=phase, before=before: gw.timeouts(phase) > before)
        assert not held.done() and gw.gateway.state.longpolls.count() == 1
        gw.backend("exchange").inject_message("alice", "wake up", "now")
        r = await asyncio.wait_for(held, 10)
        assert (r.status, r.text("Status")) == (200, "2")


async def test_connections_over_the_cap_are_refused_early_and_counted(
    tmp_path: Path, backend: RecordingBackend
) -> None:
    relaxed = {"header_timeout_seconds": 60, "idle_timeout_seconds": 60, "max": 3}
    async with gateway_with(tmp_path, backend, **relaxed) as gw:
        held = [await RawConnection.open(gw.url) for _ in range(3)]
        await gw.until(lambda: gw.sample("sentry_connections_open", listener="devices") == 3)
        async with await RawConnection.open(gw.url) as extra:
            answer = await extra.response()
            assert (answer.status, answer.header("Retry-After")) == (503, "10")
            assert await extra.closed_by_peer()
        assert gw.sample("sentry_connections_refused_total", listener="devices") == 1
        await held[0].close()
        await gw.until(lambda: gw.sample("sentry_connections_open", listener="devices") == 2)
        async with await RawConnection.open(gw.url) as again:
            await again.send(request_bytes("POST", FOLDERSYNC_Q, HEADERS))
            assert (await again.response()).status == 200
        for conn in held[1:]:
            await conn.close()


async def test_tls_connections_over_the_cap_get_no_handshake(tmp_path: Path) -> None:
    relaxed = {"header_timeout_seconds": 60, "idle_timeout_seconds": 60, "max": 2}
    async with demo_gateway(tmp_path, gateway={"connections": relaxed}) as gw:
        held = [await RawConnection.open(gw.url) for _ in range(2)]
        with pytest.raises((ConnectionError, OSError, asyncio.IncompleteReadError)):
            extra = await RawConnection.open(gw.url)
            await extra.send(request_bytes("OPTIONS", EAS, []))
            await extra.response()
        assert gw.sample("sentry_connections_refused_total", listener="devices") == 1
        for conn in held:
            await conn.close()
        await gw.until(lambda: gw.sample("sentry_connections_open", listener="devices") == 0)


async def test_a_failed_tls_handshake_gives_its_slot_back(tmp_path: Path) -> None:
    relaxed = {"header_timeout_seconds": 60, "max": 2}
    async with demo_gateway(tmp_path, gateway={"connections": relaxed}) as gw:
        plain = gw.url.replace("https://", "http://")
        for _ in range(5):  # plain HTTP on the TLS port: the handshake fails
            async with await RawConnection.open(plain) as conn:
                await conn.send(request_bytes("OPTIONS", EAS, []))
                assert await conn.closed_by_peer()
        await gw.until(lambda: gw.sample("sentry_connections_open", listener="devices") == 0)
        assert gw.sample("sentry_connections_refused_total", listener="devices") == 0


def test_the_cap_stays_below_the_descriptor_limit() -> None:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    cap, safe = connection_cap(None, reserve=100)
    assert cap == safe and 2 * cap + 100 <= soft
    assert connection_cap(10**9, reserve=100)[0] == safe
    assert connection_cap(5, reserve=100)[0] == 5


async def test_a_flood_of_refusals_is_a_few_log_lines_that_count_the_rest(
    tmp_path: Path, backend: RecordingBackend
) -> None:
    relaxed = {"header_timeout_seconds": 60, "idle_timeout_seconds": 60, "max": 1}
    with captured_log_output() as log:
        async with gateway_with(tmp_path, backend, **relaxed) as gw:
            held = await RawConnection.open(gw.url)
            await gw.until(lambda: gw.sample("sentry_connections_open", listener="devices") == 1)
            for _ in range(50):
                async with await RawConnection.open(gw.url) as extra:
                    assert (await extra.response()).status == 503
            assert gw.sample("sentry_connections_refused_total", listener="devices") == 50
            await held.close()
    refused = [e for e in log.events() if e.get("event") == "connections_refused"]
    assert 1 <= len(refused) <= 5
    assert refused[0]["level"] == "warning"
    assert log.not_json() == []


async def test_a_gated_listener_serves_an_app_or_the_device_server() -> None:
    """A low-level aiohttp server has no middleware to start its connections'
    phases: it would stay in its head phase and be cut mid-body. The gate
    refuses it; the device listener's own server keeps its phases itself, and
    its body clock cuts a body that stops half-way."""
    from prometheus_client import CollectorRegistry

    from sentry.observability.metrics import Metrics
    from sentry.proxy.connections import GatedSite
    from sentry.proxy.guard import ConnectionLimits
    from sentry.proxy.h1message import DeviceRequest
    from sentry.proxy.h1request import Limits
    from sentry.proxy.h1server import DeviceRunner, DeviceServer

    async def plain(request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        return aiohttp.web.Response(text="never served")

    registry = CollectorRegistry()
    gate = {
        "limits": ConnectionLimits(body_timeout=0.3),
        "metrics": Metrics(registry),
        "listener": "devices",
        "max_connections": 8,
    }
    low_level = aiohttp.web.ServerRunner(aiohttp.web.Server(plain))
    await low_level.setup()
    try:
        with pytest.raises(RuntimeError, match="an application or a DeviceServer"):
            await GatedSite(low_level, "127.0.0.1", 0, **gate).start()
    finally:
        await low_level.cleanup()

    async def handler(request: DeviceRequest) -> aiohttp.web.StreamResponse:
        await request.content.read()
        return aiohttp.web.Response(text="never served")

    runner = DeviceRunner(DeviceServer(handler, Limits()))
    await runner.setup()
    site = GatedSite(runner, "127.0.0.1", 0, **gate)
    try:
        await site.start()
        head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345"
        reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
        writer.write(head)
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert b"never served" not in answer
        labels = {"listener": "devices", "phase": "body"}
        assert registry.get_sample_value("sentry_connection_timeouts_total", labels) == 1
    finally:
        await runner.cleanup()


async def test_pipelined_requests_are_answered_in_their_order(
    tmp_path: Path, backend: RecordingBackend
) -> None:
    """Requests sent back to back in one write wait in aiohttp's queue of the
    connection (a list here, ``guard._Pending``) and are answered first in,
    first out: a forward, a 404, another forward, a 405."""
    other = FOLDERSYNC_Q.replace("SLOW0001", "SLOW0003")
    data = b"".join(
        (
            request_bytes("POST", FOLDERSYNC_Q, HEADERS),
            request_bytes("POST", "/elsewhere", HEADERS),
            request_bytes("POST", other, HEADERS),
            request_bytes("GET", FOLDERSYNC_Q, HEADERS),
        )
    )
    async with gateway_with(tmp_path, backend) as gw, await RawConnection.open(gw.url) as conn:
        await conn.send(data)
        assert [r.status for r in await conn.responses(4)] == [200, 404, 200, 405]
    assert [r.target for r in backend.eas_requests()] == [FOLDERSYNC_Q, other]


async def test_a_flood_of_pipelined_requests_in_one_write_is_answered_whole(
    tmp_path: Path, backend: RecordingBackend
) -> None:
    """2,000 requests in one write: more than aiohttp queues before it stops
    reading (32), all parsed from the first reads; every one is answered, in
    order, on the one connection, and none reaches the backend."""
    count = 2000
    one = request_bytes("POST", "/elsewhere", HEADERS)
    async with gateway_with(tmp_path, backend) as gw, await RawConnection.open(gw.url) as conn:
        await conn.send(one * count)
        answers = await conn.responses(count, timeout=60.0)
    assert [r.status for r in answers] == [404] * count
    assert backend.eas_requests() == []
