"""The lean client's connection and answer (``leanclient.py`` keeps the pool).

Approach. ``Conn`` is the asyncio protocol of one backend connection: it
feeds what arrives to its ``AnswerParser`` (``h1answer.py``), wakes the one
coroutine waiting on it, runs the read timer (restarted by every byte
received, as aiohttp's ``sock_read``) and, while it is idle, the keep-alive
(one timer for both, kept when it is due before the new deadline and
re-armed when it fires, so a reused connection schedules none per
request), and pauses reading while more than
``BUFFER_LIMIT`` body bytes wait to be relayed. ``LeanResponse`` is what the
relay sees: status, reason, headers, ``content_length`` and the body read
whole or in chunks; ``release`` gives a cleanly ended connection back to its
client for reuse and closes any other. Failures surface as the data path's
errors (``UpstreamTimeout``, ``UpstreamBroken``: ``raise_for``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, NoReturn, cast

from multidict import CIMultiDictProxy

from sentry.aio import chunks_of

from .errors import UpstreamBroken, UpstreamTimeout
from .h1answer import AnswerParser, BadAnswer

if TYPE_CHECKING:
    from .leanclient import LeanClient

__all__ = ["BUFFER_LIMIT", "Conn", "LeanResponse", "Origin", "raise_for"]

BUFFER_LIMIT = 256 * 1024
_NONE, _READ, _IDLE = 0, 1, 2  # which of a connection's timeouts runs
Origin = tuple[str, str, int]  # scheme, host, port


class Conn(asyncio.Protocol):
    """One connection to a backend; one answer at a time."""

    __slots__ = (
        "_idle_until",
        "_last",
        "_loop",
        "_timer",
        "_timing",
        "client",
        "error",
        "lost",
        "origin",
        "parser",
        "paused",
        "read_timeout",
        "received",
        "transport",
        "waiter",
        "whole",
    )

    def __init__(self, client: LeanClient, origin: Origin) -> None:
        self.client = client
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser: AnswerParser | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.error: Exception | None = None
        self.lost = False
        self.paused = False
        self.whole = False  # the reader takes the whole body: no flow control
        self.received = False  # a byte of the current answer came in
        self.read_timeout = 0.0
        self._loop = asyncio.get_running_loop()
        # One timer for the read timeout (while an answer is awaited) and the
        # keep-alive (while idle): ``_timing`` says which runs, and a timer
        # due before the deadline is kept and re-armed when it fires, so a
        # kept-alive connection arms no timer per request.
        self._timing = _NONE
        self._timer: asyncio.TimerHandle | None = None
        self._last = 0.0
        self._idle_until = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        if parser is None:  # idle: a backend may not speak unasked
            self.abort()
            return
        self._last = time.monotonic()
        self.received = True
        try:
            parser.feed(data)
        except BadAnswer as exc:
            self._fail(exc)
            return
        if (
            len(parser.body) > BUFFER_LIMIT
            and not (self.paused or self.whole)
            and self.transport is not None
        ):
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        if self.parser is not None:
            try:
                self.parser.feed_eof()
            except BadAnswer as exc:
                self._fail(exc)
                return False
            self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.client.forget(self)
        self.stop_timer()
        parser = self.parser
        if parser is not None and not parser.done and self.error is None:
            self.error = BadAnswer("connection closed by the backend")
        self._wake()

    def _fail(self, exc: Exception) -> None:
        self.error = exc
        self.abort()
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def abort(self) -> None:
        self.stop_timer()
        if self.transport is not None:
            self.transport.abort()

    def resume(self) -> None:
        if self.paused and self.transport is not None and not self.lost:
            self.paused = False
            self.transport.resume_reading()

    def arm(self, read_timeout: float) -> None:
        """Start the read timer (restarted by every byte received)."""
        self.read_timeout = read_timeout
        self._last = time.monotonic()
        self._timing = _READ
        self._due_in(read_timeout)

    def idle_for(self, seconds: float) -> None:
        """Idle from now: closed ``seconds`` later unless taken (``busy``) before."""
        self._idle_until = self._loop.time() + seconds
        self._timing = _IDLE
        self._due_in(seconds)

    def busy(self) -> None:
        """Taken for a request: neither timeout runs until ``arm``."""
        self._timing = _NONE

    def _due_in(self, seconds: float) -> None:
        loop = self._loop
        due = loop.time() + seconds
        timer = self._timer
        if timer is not None:
            if timer.when() <= due:
                return  # fires first and looks again
            timer.cancel()
        self._timer = loop.call_at(due, self._check_timer)

    def _check_timer(self) -> None:
        self._timer = None
        timing = self._timing
        if timing == _READ:
            left = self._last + self.read_timeout - time.monotonic()
        elif timing == _IDLE:
            left = self._idle_until - self._loop.time()
        else:
            return
        if left > 0.001:  # not yet (bytes arrived, or the timer was kept from before)
            self._timer = self._loop.call_at(self._loop.time() + left, self._check_timer)
            return
        self._timing = _NONE
        if timing == _IDLE:
            self.abort()
        elif self.parser is not None and not self.parser.done and self.error is None:
            self.error = TimeoutError("no data from the backend within the read timeout")
            self.abort()
            self._wake()

    def stop_timer(self) -> None:
        self._timing = _NONE
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def wait(self) -> asyncio.Future[None]:
        """A future done when the parser has news (head, body bytes, the end)
        or it failed. A plain future, not a coroutine: a held Ping awaits it
        without one more frame. A cancelled or finished one left behind is
        ignored by ``_wake`` and replaced by the next call."""
        waiter = self.waiter = self._loop.create_future()
        return waiter


class LeanResponse:
    """The backend's answer: its head, and its body as it arrives."""

    __slots__ = ("_conn", "_server", "content_length", "headers", "reason", "status")

    def __init__(self, conn: Conn, server: str) -> None:
        assert conn.parser is not None and conn.parser.head is not None
        head = conn.parser.head
        self._conn: Conn | None = conn
        self._server = server
        self.status = head.status
        self.reason = head.reason
        self.headers: CIMultiDictProxy[str] = head.headers
        self.content_length = head.content_length

    @property
    def content(self) -> LeanResponse:
        """The body reader (``aiohttp.ClientResponse.content``'s calls)."""
        return self

    async def read(self, n: int = -1) -> bytes:
        """The whole body (``n < 0``), or up to ``n`` bytes as they arrive
        (``b""``: the end)."""
        conn = self._conn
        if conn is None:
            return b""
        parser = conn.parser
        assert parser is not None
        if n < 0:  # all of it is wanted: pausing would wait for a reader that is this one
            conn.whole = True
            conn.resume()
        while True:
            if conn.error is not None:
                self._broken(conn.error)
            if parser.body and (n >= 0 or parser.done):
                break
            if parser.done:
                return b""
            await self._wait(conn)
        body = parser.body
        if n < 0 or n >= len(body):
            data = bytes(body)
            body.clear()
        else:
            data = bytes(body[:n])
            del body[:n]
        if len(body) <= BUFFER_LIMIT // 2:
            conn.resume()
        return data

    def iter_chunked(self, n: int) -> AsyncIterator[bytes]:
        return chunks_of(self, n)

    @property
    def buffered(self) -> int:
        """Body bytes received and not read yet (at most about ``BUFFER_LIMIT``
        plus one socket read, unless the whole body was asked for)."""
        parser = None if self._conn is None else self._conn.parser
        return 0 if parser is None else len(parser.body)

    @property
    def held_back(self) -> bool:
        """Whether reading from the backend is paused until the relay catches up."""
        return self._conn is not None and self._conn.paused

    def at_eof(self) -> bool:
        parser = None if self._conn is None else self._conn.parser
        return parser is None or (parser.done and not parser.body)

    async def _wait(self, conn: Conn) -> None:
        try:
            await conn.wait()
        except asyncio.CancelledError:
            self._conn = None
            conn.client.retire(conn)
            raise

    def _broken(self, error: Exception) -> NoReturn:
        self.close()
        raise_for(error, self._server)

    def release(self) -> None:
        """Done with the answer: the connection goes back to the idle list
        when the answer was read to its end and the connection can be
        reused; otherwise it is closed."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        parser = conn.parser
        if parser is not None and parser.done and parser.reusable and not parser.body:
            conn.client.park(conn)
        else:
            conn.abort()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()


def raise_for(error: Exception, server: str) -> NoReturn:
    """The data path's error for what went wrong on a connection."""
    if isinstance(error, TimeoutError):
        raise UpstreamTimeout("backend did not answer in time", server) from error
    raise UpstreamBroken(f"connection broke: {error}", server) from error
