"""Raw HTTP/1.1 on a socket: the bytes a test writes are the bytes the gateway reads.

Approach. aiohttp's client (like every client library) refuses to send the
malformed requests an attacker sends — bare LF, a NUL in a header, a body on
OPTIONS with a lying Content-Length, pipelined requests — so the tests of the
wire write them by hand. ``RawConnection`` opens a TCP (optionally TLS)
connection, writes bytes as given (all at once, or trickled), and reads
answers with a small lenient response parser (status, headers, body by
Content-Length, chunked or until close). ``request_bytes`` builds a request
head from parts so a test states only what it changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["RawConnection", "RawResponse", "insecure_tls", "request_bytes"]


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers if k.lower() == lowered), None)


def insecure_tls() -> ssl.SSLContext:
    """A client context for the tests' self-signed gateway (loopback only)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def request_bytes(
    method: str,
    target: str,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    *,
    version: str = "HTTP/1.1",
    host: str = "gateway.test",
    eol: bytes = b"\r\n",
    content_length: bool = True,
) -> bytes:
    """A request: request line, Host, ``headers`` in order, Content-Length of
    ``body`` (unless ``content_length`` is false or a header already gives one)."""
    lines = [f"{method} {target} {version}".encode(), f"Host: {host}".encode()]
    given = list(headers)
    lines += [f"{k}: {v}".encode("latin-1") for k, v in given]
    has_framing = any(k.lower() in ("content-length", "transfer-encoding") for k, _ in given)
    if content_length and not has_framing and (body or method not in ("GET", "OPTIONS")):
        lines.append(f"Content-Length: {len(body)}".encode())
    return eol.join(lines) + eol + eol + body


class RawConnection:
    """One client connection driven byte by byte."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, url: str, *, timeout: float = 5.0) -> RawConnection:
        """Connect to ``http://host:port`` or ``https://host:port`` (no verification)."""
        scheme, _, rest = url.partition("://")
        host, _, port = rest.rstrip("/").rpartition(":")
        tls = insecure_tls() if scheme == "https" else None
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host.strip("[]"), int(port), ssl=tls, server_hostname="localhost" if tls else None
            )
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def trickle(self, data: bytes, *, step: int = 1, pause: float = 0.01) -> None:
        """Write ``data`` ``step`` bytes at a time with ``pause`` between writes;
        stops quietly when the server closes the connection."""
        for i in range(0, len(data), step):
            if self.writer.is_closing() or self.reader.at_eof():
                return
            try:
                self.writer.write(data[i : i + step])
                await self.writer.drain()
            except (ConnectionError, OSError):
                return
            await asyncio.sleep(pause)

    async def response(self, timeout: float = 10.0) -> RawResponse:
        """Read one answer (raises ``asyncio.IncompleteReadError`` if closed first)."""
        async with asyncio.timeout(timeout):
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head[:-4].decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            headers = tuple(
                (k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])
            )
            return RawResponse(status, headers, await self._body(status, headers))

    async def _body(self, status: int, headers: tuple[tuple[str, str], ...]) -> bytes:
        fields = {k.lower(): v for k, v in headers}
        if "content-length" in fields:
            return await self.reader.readexactly(int(fields["content-length"]))
        if fields.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                parts.append((await self.reader.readexactly(size + 2))[:-2])
            await self.reader.readuntil(b"\r\n")
            return b"".join(parts)
        if status in (204, 304) or status < 200:
            return b""
        return await self.reader.read()

    async def responses(self, count: int, timeout: float = 10.0) -> list[RawResponse]:
        return [await self.response(timeout) for _ in range(count)]

    async def closed_by_peer(self, timeout: float = 10.0) -> bool:
        """Wait until the server closes the connection (True), reading and
        discarding whatever it still sends; False if it stays open."""
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except (ConnectionError, OSError, ssl.SSLError):
            pass
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError, TimeoutError, ssl.SSLError):
            async with asyncio.timeout(2):
                await self.writer.wait_closed()

    async def __aenter__(self) -> RawConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
