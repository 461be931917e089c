"""What a device request's handler reads and writes: the body, the request, a streamed answer.

The device listener's own HTTP/1.1 server (``h1server.py``) is split along
one seam: the connection (buffering, parsing, clocks, writing, shutdown)
stays there, and the objects the handler holds are here. ``Body`` is a
request body as the handler reads it, fed raw bytes by the connection and
taking what belongs to it (by length or chunked framing), with back-pressure
(the connection stops reading while ``BODY_HIGH`` bytes wait unread) and
the drop of an unread body up to ``DISCARD_LIMIT`` bytes. ``DeviceRequest``
is the parsed head, the headers as a case-insensitive multidict, the body
and the peer, and answers through its connection. ``AnswerStream`` frames a
streamed answer's body (chunked, of a declared length, or to the close);
``answer_head`` writes an answer's head.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING
from urllib.parse import unquote

from aiohttp import HttpVersion, web
from multidict import CIMultiDict, CIMultiDictProxy

from sentry.aio import chunks_of

from .errors import BrokenBody
from .h1request import ChunkedDecoder, RequestHead

if TYPE_CHECKING:
    from .h1server import DeviceConnection

__all__ = ["BODY_HIGH", "DISCARD_LIMIT", "AnswerStream", "Body", "DeviceRequest", "answer_head"]

BODY_HIGH = 64 * 1024  # body bytes buffered unread before the connection stops reading
DISCARD_LIMIT = 64 * 1024  # an unread body up to this is dropped to keep the connection
# the gateway writes an answer's framing itself: these fields of the answer are dropped
_FRAMING = frozenset(("content-length", "transfer-encoding", "connection"))


class Body:
    """A request body as the handler reads it: ``read``, ``iter_chunked``,
    ``is_eof`` (the whole body has arrived), the subset of aiohttp's
    ``StreamReader`` the gateway uses. The connection feeds it raw bytes and
    it takes what belongs to the body (by length or chunked framing)."""

    __slots__ = (
        "_conn",
        "_decoder",
        "_discarded",
        "_eof",
        "_exc",
        "_left",
        "_parts",
        "_size",
        "_waiter",
        "discarding",
    )

    def __init__(self, conn: DeviceConnection, length: int | None, chunked: bool) -> None:
        self._conn = conn
        self._parts: list[bytes] = []
        self._size = 0
        self._left = length or 0
        self._decoder = ChunkedDecoder() if chunked else None
        self._eof = not chunked and not length
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.discarding = False
        self._discarded = 0

    def is_eof(self) -> bool:
        """The whole body has arrived (it may not all have been read)."""
        return self._eof

    def at_eof(self) -> bool:
        return self._eof and not self._parts

    @property
    def buffered(self) -> int:
        return self._size

    # -- the connection's side -------------------------------------------------------

    def feed(self, data: bytes | bytearray | memoryview) -> int:
        """Take the body's bytes from ``data``; return how many were taken."""
        if self._decoder is not None:
            pieces, used = self._decoder.feed(data)  # BadRequest: the caller fails the body
            for piece in pieces:
                self._add(piece)
            if self._decoder.done:
                self._end()
            return used
        take = min(self._left, len(data))
        if take:
            self._add(bytes(data[:take]))
            self._left -= take
            if not self._left:
                self._end()
        return take

    def _add(self, piece: bytes) -> None:
        if not piece:
            return
        if self.discarding:
            self._discarded += len(piece)
            return
        self._parts.append(piece)
        self._size += len(piece)
        self._wake()

    def _end(self) -> None:
        self._eof = True
        self._wake()

    def fail(self, exc: BaseException) -> None:
        self._exc = exc
        self._wake()

    @property
    def failed(self) -> bool:
        return self._exc is not None

    @property
    def broken(self) -> BrokenBody | None:
        """The device broke the body's chunked framing (what a failed
        forward of it is answered as: 400, not a backend failure)."""
        return self._exc if isinstance(self._exc, BrokenBody) else None

    def discard(self) -> bool:
        """Drop what is buffered and what is still to come; False when what
        is still to come is over ``DISCARD_LIMIT`` (then the connection closes)."""
        self.discarding = True
        self._parts.clear()
        self._size = 0
        return self._decoder is not None or self._left <= DISCARD_LIMIT

    @property
    def over_discard_limit(self) -> bool:
        return self._discarded > DISCARD_LIMIT

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- the handler's side ------------------------------------------------------------

    async def _wait(self) -> None:
        if self._exc is not None:
            raise self._exc
        waiter = self._waiter = self._conn._loop.create_future()
        self._conn.resume_body()
        await waiter
        if self._exc is not None:
            raise self._exc

    def _take(self, n: int) -> bytes:
        parts = self._parts
        first = parts[0]
        if n < 0 or n >= self._size:
            data = first if len(parts) == 1 else b"".join(parts)
            parts.clear()
        elif len(first) <= n:
            data = parts.pop(0)
        else:
            data, parts[0] = first[:n], first[n:]
        self._size -= len(data)
        if self._size < BODY_HIGH // 4:
            self._conn.resume_body()
        return data

    async def read(self, n: int = -1) -> bytes:
        """``n`` < 0: the whole rest of the body; else up to ``n`` bytes (b"" at its end)."""
        if n < 0:
            while not self._eof:
                await self._wait()
            return self._take(-1) if self._parts else b""
        while not self._parts:
            if self._eof:
                return b""
            await self._wait()
        return self._take(n)

    def iter_chunked(self, n: int) -> AsyncIterator[bytes]:
        return chunks_of(self, n)


class DeviceRequest:
    """One request as the handler sees it (the subset of aiohttp's request the gateway uses)."""

    __slots__ = ("_conn", "_headers", "_out", "content", "head", "prefix", "started", "whole")

    def __init__(self, conn: DeviceConnection, head: RequestHead) -> None:
        self._conn = conn
        self.head = head
        self._headers: CIMultiDictProxy[str] | None = None
        self.content = Body(conn, head.content_length, head.chunked)
        self.prefix = b""  # the part of an uninspected body already read (inspect.py)
        self.started = False  # the answer's head has been written
        self.whole = False  # the whole answer was written at once (answer_now)
        self._out: AnswerStream | None = None

    @property
    def method(self) -> str:
        return self.head.method

    @property
    def version(self) -> HttpVersion:
        return HttpVersion(*self.head.version)

    @property
    def raw_path(self) -> str:
        """The request target as sent (origin form; an absolute form's path and query)."""
        target = self.head.target
        if target.startswith("/"):
            return target
        for scheme in ("http://", "https://"):
            if target[: len(scheme)].lower() == scheme:
                slash = target.find("/", len(scheme))
                return "/" if slash < 0 else target[slash:]
        return target

    path_qs = raw_path

    @property
    def path(self) -> str:
        """The path, percent-decoded (what is matched against the EAS path)."""
        return unquote(self.raw_path.partition("?")[0])

    @property
    def query_string(self) -> str:
        """The raw query string (``parse_request`` decodes it once)."""
        return self.raw_path.partition("?")[2]

    @property
    def raw_headers(self) -> tuple[tuple[bytes, bytes], ...]:
        return self.head.raw_headers

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        headers = self._headers
        if headers is None:
            headers = self._headers = CIMultiDictProxy(
                CIMultiDict(
                    [
                        (k.decode("ascii"), v.decode("utf-8", "surrogateescape"))
                        for k, v in self.head.raw_headers
                    ]
                )
            )
        return headers

    def forget_headers(self) -> None:
        """Drop the decoded headers (about 2 KB) while a long poll waits; they
        are decoded again from the raw head if asked for."""
        self._headers = None

    @property
    def content_length(self) -> int | None:
        return self.head.content_length

    @property
    def keep_alive(self) -> bool:
        return self.head.keep_alive

    @property
    def remote(self) -> str | None:
        return self._conn.peer

    @property
    def transport(self) -> asyncio.Transport | None:
        return self._conn.transport

    def close(self) -> None:
        """Close the device's connection once what was written is sent (an
        answer broken off after its head: only a cut connection tells)."""
        self._conn.close()

    async def send_continue(self) -> None:
        """The interim ``100 Continue`` (before the body is read)."""
        await self._conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    async def prepare(self, response: web.StreamResponse) -> None:
        """Write ``response``'s head; its body follows with ``write`` and ``write_eof``."""
        self._out = self._conn.start_stream(self, response)

    async def write(self, data: bytes) -> None:
        assert self._out is not None, "prepare() first"
        await self._out.write(data)

    async def write_eof(self) -> None:
        assert self._out is not None, "prepare() first"
        await self._out.write_eof()

    def answer_now(self, response: web.Response) -> bool:
        """Write ``response`` whole at once, while the handler still waits
        (a revoked held Ping: ``longpolls.py``); the handler then returns
        the same answer and the connection writes nothing more. False when
        an answer was started already or the device has gone."""
        return self._conn.answer_now(self, response)

    @property
    def complete(self) -> bool:
        """The answer has been written whole."""
        return not self.started or self.whole or (self._out is not None and self._out.done)


class AnswerStream:
    """The body of a streamed answer: chunked, of a declared length, or to the close."""

    __slots__ = ("_conn", "chunked", "done", "left")

    def __init__(self, conn: DeviceConnection, length: int | None, chunked: bool) -> None:
        self._conn = conn
        self.left = length
        self.chunked = chunked
        self.done = False

    async def write(self, data: bytes) -> None:
        if not data:
            return
        if self.left is not None:
            if len(data) > self.left:
                raise ConnectionResetError("answer longer than its declared length")
            self.left -= len(data)
        if self.chunked:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        await self._conn.write(data)

    async def write_eof(self) -> None:
        if self.left:
            raise ConnectionResetError("answer shorter than its declared length")
        if self.chunked:
            await self._conn.write(b"0\r\n\r\n")
        self.done = True


class _Date:
    """The ``Date`` header value, formatted once a second."""

    __slots__ = ("second", "value")

    def __init__(self) -> None:
        self.second = -1
        self.value = ""

    def now(self) -> str:
        second = int(time.time())
        if second != self.second:
            self.second = second
            self.value = email.utils.formatdate(second, usegmt=True)
        return self.value


_date = _Date()


def answer_head(
    version: tuple[int, int],
    response: web.StreamResponse,
    framing: str,
    keep_alive: bool,
) -> bytes:
    """An answer's head: status line and fields, ``Date`` added, never a
    ``Server``, ``Connection`` as ``keep_alive`` says; ``framing`` is the Content-Length or
    Transfer-Encoding line (with its CRLF), or empty."""
    lines = [f"HTTP/{version[0]}.{version[1]} {response.status} {response.reason}\r\n"]
    has_date = False
    for name, value in response.headers.items():
        lowered = name.lower()
        if lowered in _FRAMING:
            continue
        has_date = has_date or lowered == "date"
        lines.append(f"{name}: {value}\r\n")
    if framing:
        lines.append(framing)
    if not has_date:
        lines.append(f"Date: {_date.now()}\r\n")
    if not keep_alive:
        if version >= (1, 1):
            lines.append("Connection: close\r\n")
    elif version < (1, 1):
        lines.append("Connection: keep-alive\r\n")
    lines.append("\r\n")
    text = "".join(lines)
    # every piece ends in its one CRLF: any other CR or LF came from a name, a value
    # or the reason (one count over the head instead of four tests per field)
    if text.count("\r") != len(lines) or text.count("\n") != len(lines):
        raise ValueError("a line break in an answer's status line or header field")
    return text.encode("utf-8", "surrogateescape")
