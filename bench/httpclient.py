"""A minimal HTTP/1.1 keep-alive client on asyncio streams, for the load generator.

Approach. The generator must cost far less per request than the servers it
measures, so it sends pre-built request bytes and parses only what it needs
from the answer: the status code, then the body by Content-Length or chunked
transfer coding, and whether the server will close the connection. An
aiohttp ``ClientSession`` would cost several times more CPU per request
than this, and on two cores that CPU is taken from the server under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

__all__ = ["Connection", "HttpError", "client_ssl_context"]

_LIMIT = 1 << 20


class HttpError(Exception):
    """The server broke the HTTP exchange (closed, garbage)."""


class ResumingContext(ssl.SSLContext):
    """A client context that offers one saved TLS session on every new
    connection, as a phone's TLS stack does when it reconnects after a blip.

    asyncio's ``create_connection`` has no session parameter; it calls
    ``wrap_bio``, which takes one. The session is the first one a connection
    of this context received (TLS 1.3 sends its tickets after the handshake,
    so it is saved once an answer has been read: ``Connection.response``);
    ``offered`` and ``reused`` count the connections that offered it and the
    ones the server resumed."""

    session: ssl.SSLSession | None = None
    offered = 0
    reused = 0

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        if self.session is not None and kwargs.get("session") is None:
            kwargs["session"] = self.session
            self.offered += 1
        return super().wrap_bio(*args, **kwargs)

    def opened(self, writer: asyncio.StreamWriter) -> None:
        """Count ``writer``'s new connection as resumed when it was."""
        obj = writer.get_extra_info("ssl_object")
        if obj is not None and obj.session_reused:
            self.reused += 1

    def save(self, writer: asyncio.StreamWriter) -> None:
        """Keep the session of ``writer``'s connection when none is kept yet."""
        obj = writer.get_extra_info("ssl_object")
        session = None if obj is None else obj.session
        if self.session is None and session is not None and session.has_ticket:
            self.session = session


def client_ssl_context(*, resume: bool = False) -> ssl.SSLContext:
    """TLS to the bench's own self-signed gateway: no verification (loopback
    only); ``resume``: offer a saved session on new connections."""
    ctx = (
        ResumingContext(ssl.PROTOCOL_TLS_CLIENT)
        if resume
        else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    )
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Connection:
    """One keep-alive connection: ``await request(bytes) -> (status, body)``."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.closed = False
        self.resuming = tls if isinstance(tls, ResumingContext) else None
        if self.resuming is not None:
            self.resuming.opened(writer)

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None = None,
        local_host: str | None = None,
    ) -> Connection:
        reader, writer = await asyncio.open_connection(
            host,
            port,
            ssl=tls,
            server_hostname="localhost" if tls else None,
            local_addr=(local_host, 0) if local_host else None,
            limit=_LIMIT,
        )
        return cls(reader, writer, tls)

    async def request(self, data: bytes) -> tuple[int, bytes]:
        """Send one request and read the whole answer."""
        self.writer.write(data)
        return await self.response()

    async def response(self) -> tuple[int, bytes]:
        """Read one answer (status, body)."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            self.closed = True
            raise HttpError("connection closed before an answer") from exc
        try:
            status = int(head[9:12])
        except ValueError:
            raise HttpError(f"bad status line {head[:40]!r}") from None
        lower = head.lower()
        if b"\r\nconnection: close" in lower:
            self.closed = True
        start = lower.find(b"\r\ncontent-length:")
        if start >= 0:
            end = lower.index(b"\r\n", start + 2)
            size = int(lower[start + 17 : end])
            body = await self.reader.readexactly(size) if size else b""
        elif b"\r\ntransfer-encoding: chunked" in lower:
            body = await self._chunked()
        elif status in (204, 304) or 100 <= status < 200:
            body = b""
        else:
            body = await self.reader.read()
            self.closed = True
        if self.resuming is not None and self.resuming.session is None:
            self.resuming.save(self.writer)  # TLS 1.3: the tickets came after the handshake
        return status, body

    async def _chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            line = await self.reader.readuntil(b"\r\n")
            size = int(line.split(b";", 1)[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")  # no trailers are sent
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size + 2))
            parts[-1] = parts[-1][:-2]

    def close(self) -> None:
        self.closed = True
        self.writer.close()

    async def aclose(self) -> None:
        self.close()
        with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
            await asyncio.wait_for(self.writer.wait_closed(), 2)
