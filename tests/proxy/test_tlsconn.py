"""The device listener's own TLS layer (``sentry/proxy/tlsconn.py``), with real
TLS clients on loopback: the handshake clock, a failed handshake, pipelining
and a large upload across many records (reading paused and resumed), a clean
``close_notify``, and the send clock through the TLS layer.

Each test waits for a positive signal (a counter moved, the peer closed) with
a bounded wait, and never asserts on elapsed time.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sentry.proxy.tlsconn import TlsConnection
from sentry.testing.eas_client import basic_auth
from sentry.testing.gateway import DemoGateway, recording_gateway
from sentry.testing.logs import captured_log_output
from sentry.testing.raw_client import RawConnection, insecure_tls, request_bytes
from sentry.testing.recording_backend import RecordingBackend, start_recording_backend

EAS = "/Microsoft-Server-ActiveSync"
FOLDERSYNC_Q = f"{EAS}?Cmd=FolderSync&User=alice&DeviceId=TLS00001&DeviceType=iPhone"
HEADERS = [("Authorization", basic_auth("alice", "secret")), ("MS-ASProtocolVersion", "14.1")]
TINY = 0.3


def open_connections(gw: DemoGateway) -> float:
    return gw.sample("sentry_connections_open", listener="devices")


def address(gw: DemoGateway) -> tuple[str, int]:
    host, port = gw.url.removeprefix("https://").rsplit(":", 1)
    return host, int(port)


def tls_gateway(tmp_path: Path, backend: RecordingBackend, **connections: Any) -> Any:
    return recording_gateway(tmp_path, backend.url, tls=True, **connections)


@pytest.mark.parametrize("sends", [b"", b"\x16\x03\x01\x02"], ids=["nothing", "half a record"])
async def test_a_handshake_that_does_not_finish_is_cut_off_by_its_clock(
    tmp_path: Path, backend: RecordingBackend, sends: bytes
) -> None:
    async with tls_gateway(tmp_path, backend, header_timeout_seconds=TINY) as gw:
        reader, writer = await asyncio.open_connection(*address(gw))
        writer.write(sends)
        await gw.until(lambda: gw.timeouts("handshake") == 1)
        async with asyncio.timeout(10):
            assert await reader.read() == b""  # closed by the gateway, nothing sent
        writer.close()
        await gw.until(lambda: open_connections(gw) == 0)
        assert gw.timeouts("head") == 0  # the HTTP clocks never started
    assert backend.eas_requests() == []


async def test_a_failed_handshake_is_counted_and_logged_once_in_a_while(
    tmp_path: Path, backend: RecordingBackend
) -> None:
    with captured_log_output() as log:
        async with tls_gateway(tmp_path, backend) as gw:
            plain = gw.url.replace("https://", "http://")
            for _ in range(8):  # plain HTTP on the TLS port
                async with await RawConnection.open(plain) as conn:
                    await conn.send(request_bytes("OPTIONS", EAS, []))
                    assert await conn.closed_by_peer()
            failed = ("sentry_bad_requests_total", {"kind": "tls:handshake"})
            await gw.until(lambda: gw.sample(failed[0], **failed[1]) == 8)
            await gw.until(lambda: open_connections(gw) == 0)
    lines = [e for e in log.events() if e.get("event") == "tls_handshake_failed"]
    assert 1 <= len(lines) < 8  # rate-limited: the rest are counted, not logged
    assert lines[0]["reason"] and lines[0]["listener"] == "devices"
    assert "Traceback" not in log.text and log.not_json() == []
    assert backend.eas_requests() == []


async def test_pipelined_requests_in_one_tls_write_are_answered_in_order(
    tmp_path: Path, backend: RecordingBackend
) -> None:
    async with tls_gateway(tmp_path, backend) as gw, await RawConnection.open(gw.url) as conn:
        one = request_bytes("POST", FOLDERSYNC_Q, HEADERS, b"")
        await conn.send(one + request_bytes("GET", "/other", []) + one)
        answers = await conn.responses(3)
        assert [a.status for a in answers] == [200, 404, 200]
    assert len(backend.eas_requests()) == 2 and backend.violations == []


async def test_a_large_upload_across_many_records_arrives_whole(
    tmp_path: Path, backend: RecordingBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """4 MiB in 16 KiB records: one socket read decrypts more than the body
    buffer's high-water mark, so the TLS layer stops handing on plain text
    and the socket's reading pauses; the rest waits in the memory BIO until
    the body is read (the spy proves that path ran)."""
    resumed = []
    original = TlsConnection.resume_reading

    def spy(self: TlsConnection) -> None:
        resumed.append(1)
        original(self)

    monkeypatch.setattr(TlsConnection, "resume_reading", spy)
    body = bytes(range(256)) * (4 * 4096)
    async with tls_gateway(tmp_path, backend) as gw, await RawConnection.open(gw.url) as conn:
        await conn.send(request_bytes("POST", FOLDERSYNC_Q, HEADERS, body))
        assert (await conn.response(timeout=30)).status == 200
    (forwarded,) = backend.eas_requests()
    assert forwarded.body == body
    assert resumed


def _blocking_client(host: str, port: int, request: bytes) -> tuple[bytes, str]:
    """A plain blocking TLS client that treats an end without close_notify as
    an error (``suppress_ragged_eofs=False``)."""
    raw = socket.create_connection((host, port), timeout=10)
    with insecure_tls().wrap_socket(
        raw, server_hostname="localhost", suppress_ragged_eofs=False
    ) as tls:
        tls.sendall(request)
        received = b""
        try:
            while chunk := tls.recv(65536):
                received += chunk
        except ssl.SSLEOFError:
            return received, "ragged"
        return received, "close_notify"


async def test_an_answer_that_ends_the_connection_ends_the_tls_session_cleanly(
    tmp_path: Path, backend: RecordingBackend
) -> None:
    request = request_bytes("POST", FOLDERSYNC_Q, [*HEADERS, ("Connection", "close")], b"")
    async with tls_gateway(tmp_path, backend) as gw:
        received, end = await asyncio.to_thread(_blocking_client, *address(gw), request)
        assert received.startswith(b"HTTP/1.1 200 ") and b"Connection: close\r\n" in received
        assert end == "close_notify"
        await gw.until(lambda: open_connections(gw) == 0)


def _trickling_client(host: str, port: int, records: list[bytes], cuts: list[int]) -> bytes:
    """A TLS client over memory BIOs on a blocking socket: after the handshake
    each of ``records`` becomes one TLS record, and their bytes are sent in
    pieces cut at the offsets ``cuts`` (negative: from the end), a short pause
    after each piece so that most reach the gateway in reads of their own.
    Returns the plain text received until the gateway ends the session."""
    raw = socket.create_connection((host, port), timeout=10)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = insecure_tls().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with raw:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                raw.sendall(outgoing.read())
                if not (data := raw.recv(65536)):
                    raise ConnectionError(
                        "the gateway closed the connection in the handshake"
                    ) from None
                incoming.write(data)
        raw.sendall(outgoing.read())  # the client's Finished
        for record in records:
            tls.write(record)
        wire = outgoing.read()
        offsets = sorted({c % len(wire) for c in cuts} | {0, len(wire)})
        for start, end in itertools.pairwise(offsets):
            raw.sendall(wire[start:end])
            time.sleep(0.02)
        received = b""
        while data := raw.recv(65536):
            incoming.write(data)
            try:
                while plain := tls.read(65536):  # b"": the gateway's close_notify
                    received += plain
            except ssl.SSLWantReadError:
                continue
            break
        return received


async def test_records_that_arrive_in_pieces_are_read_whole(
    tmp_path: Path, backend: RecordingBackend
) -> None:
    """The TLS layer reads only what OpenSSL holds or what waits in the memory
    BIO: a record's header byte by byte, a record cut in its middle, the next
    one begun in the same piece as the end of the first, the last byte alone.
    Each piece is a read with nothing whole to decrypt or a record's rest; the
    request (head and body in two records) is served once and whole."""
    body = bytes(range(256)) * 2
    head = request_bytes("POST", FOLDERSYNC_Q, [*HEADERS, ("Connection", "close")], body)
    head, body_part = head[: -len(body)], head[-len(body) :]
    cuts = [1, 2, 3, 4, 5, 200, len(head) + 22 + 2, -1]  # 22: a TLS 1.3 record's overhead
    async with tls_gateway(tmp_path, backend) as gw:
        received = await asyncio.to_thread(_trickling_client, *address(gw), [head, body_part], cuts)
        assert received.startswith(b"HTTP/1.1 200 ")
    (forwarded,) = backend.eas_requests()
    assert forwarded.body == body


async def test_a_device_that_stops_reading_its_answer_is_cut_off_through_tls(
    tmp_path: Path,
) -> None:
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 16777216\r\n\r\n" + b"m" * 16_777_216
    empty = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    backend = await start_recording_backend(lambda r: big if r.method == "POST" else empty)
    async with backend, tls_gateway(tmp_path, backend, send_timeout_seconds=TINY) as gw:
        host, port = address(gw)

        def stalled() -> None:
            with socket.socket() as raw:  # a small receive window, and no read after the head
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                raw.settimeout(10)
                raw.connect((host, port))
                with insecure_tls().wrap_socket(raw, server_hostname="localhost") as tls:
                    tls.sendall(request_bytes("POST", FOLDERSYNC_Q, HEADERS))
                    for _ in range(1500):  # up to 30 s: the gateway's counter, read-only
                        if gw.timeouts("send") >= 1:
                            return
                        time.sleep(0.02)

        await asyncio.to_thread(stalled)
        assert gw.timeouts("send") == 1
        await gw.until(lambda: open_connections(gw) == 0)


async def test_a_tls_1_2_client_is_served(tmp_path: Path, backend: RecordingBackend) -> None:
    tls = insecure_tls()
    tls.maximum_version = ssl.TLSVersion.TLSv1_2
    async with tls_gateway(tmp_path, backend) as gw:
        reader, writer = await asyncio.open_connection(
            *address(gw), ssl=tls, server_hostname="localhost"
        )
        writer.write(request_bytes("POST", FOLDERSYNC_Q, HEADERS, b""))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert writer.get_extra_info("ssl_object").version() == "TLSv1.2"
        writer.close()
        await gw.until(lambda: open_connections(gw) == 0)


async def test_a_forged_record_after_the_handshake_ends_the_connection_and_is_counted(
    tmp_path: Path, backend: RecordingBackend
) -> None:
    """An application-data record whose authentication tag is wrong (written
    under the TLS session, on the socket itself): the connection is cut, the
    record counted, nothing forwarded."""
    async with tls_gateway(tmp_path, backend) as gw:
        host, port = address(gw)

        def forge() -> str:
            raw = socket.create_connection((host, port), timeout=10)
            with insecure_tls().wrap_socket(raw, server_hostname="localhost") as tls:
                with socket.socket(fileno=os.dup(tls.fileno())) as under:
                    under.sendall(b"\x17\x03\x03\x00\x20" + os.urandom(32))
                try:
                    return "eof" if tls.recv(100) == b"" else "data"
                except (ConnectionError, ssl.SSLError) as exc:
                    return type(exc).__name__

        assert await asyncio.to_thread(forge) != "data"
        record = ("sentry_bad_requests_total", {"kind": "tls:record"})
        await gw.until(lambda: gw.sample(record[0], **record[1]) == 1)
        await gw.until(lambda: open_connections(gw) == 0)
    assert backend.eas_requests() == []


class _Gate:
    """What ``TlsConnection`` asks of the listener's gate."""

    class limits:
        header_timeout = 30.0

    def release(self) -> None:
        pass

    def timed_out(self, phase: str) -> None:
        raise AssertionError(f"timed out: {phase}")

    def tls_failed(self, reason: str, kind: str = "tls:handshake") -> None:
        raise AssertionError(f"{kind}: {reason}")


class _Sink(asyncio.Protocol):
    """Reads ``size`` bytes, then answers ``size`` bytes in one write."""

    def __init__(self, size: int) -> None:
        self.size, self.seen = size, 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.seen += len(data)
        if self.seen == self.size:
            self.transport.write(b"a" * self.size)  # type: ignore[attr-defined]


def _malloced() -> int | None:
    """Bytes the C heap holds (glibc's ``mallinfo2``), or None elsewhere."""
    import ctypes

    try:
        mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None

    class Info(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_size_t)
            for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                         "fsmblks", "uordblks", "fordblks", "keepcost")
        ]  # fmt: skip

    mallinfo2.restype = Info
    info = mallinfo2()
    return int(info.uordblks + info.hblkhd)


async def test_a_connection_that_moved_megabytes_keeps_no_large_buffer(tmp_path: Path) -> None:
    """OpenSSL's memory BIOs keep the largest size they ever held: fed whole
    socket reads and whole answers, a connection kept open after a 1 MiB
    upload and a 1 MiB answer would hold about 1.3 MiB for as long as it
    stays (a held Ping's hour). Fed in ``CHUNK`` pieces it keeps tens of KiB."""
    if _malloced() is None:
        pytest.skip("glibc's mallinfo2 is needed to read the C heap")
    from sentry.certs import ensure_certificate, server_ssl_context

    ensure_certificate(tmp_path / "c.pem", tmp_path / "k.pem", "localhost")
    context = server_ssl_context(tmp_path / "c.pem", tmp_path / "k.pem")
    size, count = 1024 * 1024, 12
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: TlsConnection(_Gate(), _Sink(size), context),  # type: ignore[arg-type]
        "127.0.0.1", 0,
    )  # fmt: skip
    port = server.sockets[0].getsockname()[1]
    opened: list[ssl.SSLSocket] = []
    done = threading.Event()

    def clients(moved: bool) -> None:
        for _ in range(count):
            raw = socket.create_connection(("127.0.0.1", port), timeout=30)
            tls = insecure_tls().wrap_socket(raw, server_hostname="localhost")
            if moved:
                tls.sendall(b"u" * size)
                got = 0
                while got < size:
                    got += len(tls.recv(1 << 20))
            opened.append(tls)
        done.set()

    try:
        import gc

        per_connection = {}
        for moved in (False, True):
            gc.collect()
            before = _malloced() or 0
            done.clear()
            thread = threading.Thread(target=clients, args=(moved,))
            thread.start()
            while not done.is_set():
                await asyncio.sleep(0.02)
            thread.join()
            gc.collect()
            per_connection[moved] = ((_malloced() or 0) - before) / count
        # the clients' own sockets hold no memory BIO (OpenSSL on the descriptor)
        assert per_connection[True] - per_connection[False] < 128 * 1024, per_connection
    finally:
        for tls in opened:
            tls.close()
        server.close()
        await server.wait_closed()
