"""The device listener's own HTTP/1.1 server: one asyncio protocol per connection.

Approach. aiohttp's server gives every request a parser object, a request
with a parsed URL and two copies of every header, a payload stream, a
writer, a response object and (on Python 3.11) a task, and keeps a
connection's protocol object of some thirty fields besides; a held Ping keeps
all of it for up to an hour, and every request pays to build it. The device
side needs little of it: one EAS path, two methods, bodies framed by
Content-Length or chunked, keep-alive and pipelining, ``Expect``. So the
device listener speaks HTTP/1.1 itself, in the sans-I/O style of the backend
leg (``h1answer.py``):

* ``h1request.py`` parses a head and frames its body (strictly: anything two
  parsers could read two ways is refused before a byte is forwarded);
* ``DeviceConnection`` is the connection: it buffers what arrives, parses
  one request at a time, feeds its body to ``Body`` (back-pressure: reading
  stops while ``BODY_HIGH`` bytes wait unread), runs the handler in a task of
  its own, writes the answer, and parses the next pipelined request only
  after the answer is written (first in, first out by construction). Its
  clocks are the guard's (``guard.PhaseClock``: head, idle, body, send), its
  errors the guard's answers: a malformed head gets a fixed text with its
  status (400, 414, 431, 501) and the connection is closed; an exception
  escaping the handler is logged and answered 500;
* what the handler holds is in ``h1message.py``: ``DeviceRequest`` (the
  parsed head, the headers as a case-insensitive multidict, the body, the
  peer), ``Body``, the streamed answer and ``answer_head``;
* answers are aiohttp's ``web.Response`` values, written in one write (head
  and body), or streamed after ``DeviceRequest.prepare`` (chunked unless the
  answer declares its length).
  The gateway adds ``Date`` and never ``Server``; ``Connection: close`` when
  the connection ends after the answer (``Connection: keep-alive`` on a kept
  HTTP/1.0 one). Writes go through the server's ``TurnWriter``
  (``turnwrite.py``): a loop turn's answers are sent together at its end, and
  a close or an abort sends what waits first.

A device that hangs up cancels its handler's task wherever it waits (a held
Ping's wait on the backend included), as aiohttp's ``handler_cancellation``
did. A body the handler did not read (a refusal before the body) is read and
dropped, up to ``DISCARD_LIMIT`` bytes, so the connection can carry the next
request; a larger one closes the connection after the answer.

``DeviceServer`` is the runner's server: it tracks the open connections and
shuts them down gracefully (idle ones at once, busy ones after their answer
or after the grace period). ``DeviceRunner`` is the aiohttp runner that
``GatedSite`` starts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from sentry.eas import responses

from .errors import BrokenBody, FramingError
from .guard import BODY, CLOSED, HEAD, IDLE, WAIT, PhaseClock, error_text
from .h1message import BODY_HIGH, AnswerStream, DeviceRequest, answer_head
from .h1request import BadRequest, Limits, parse_head
from .turnwrite import TurnWriter

if TYPE_CHECKING:
    from .connections import ConnectionGate

__all__ = ["DeviceConnection", "DeviceRunner", "DeviceServer", "Handler"]

log = structlog.get_logger("sentry.http")

# bytes of later requests buffered while one is served (a held Ping included: a
# device that pipelines behind its Ping cannot make each connection hold more)
PIPELINE_HIGH = 16 * 1024
RECHECK = 2048  # an incomplete head is checked again after this many more bytes (or 25 %)

Handler = Callable[["DeviceRequest"], Awaitable[web.StreamResponse]]


class DeviceConnection(PhaseClock, asyncio.Protocol):
    """One device connection (module comment)."""

    __slots__ = (
        "_body_bytes",
        "_body_since",
        "_buf",
        "_checked",
        "_drain",
        "_gate",
        "_last",
        "_limits",
        "_loop",
        "_outermost",
        "_paused",
        "_phase",
        "_read_paused_at",
        "_request",
        "_server",
        "_since",
        "_task",
        "_timer",
        "_write_paused_at",
        "peer",
        "transport",
    )

    def __init__(self, server: DeviceServer, gate: ConnectionGate, *, outermost: bool) -> None:
        self._server = server
        self._gate = gate
        self._limits = gate.limits
        self._outermost = outermost  # gives the gate's slot back (else the TLS layer does)
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.peer: str | None = None
        self._buf = bytearray()
        self._checked = 0  # bytes of an incomplete head already checked
        self._request: DeviceRequest | None = None
        self._task: asyncio.Task[None] | None = None
        self._paused = False
        self._drain: asyncio.Future[None] | None = None
        self._phase = HEAD
        self._since = self._last = self._body_since = 0.0
        self._body_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._read_paused_at: float | None = None
        self._write_paused_at: float | None = None

    @property
    def phase(self) -> str:
        return self._phase

    @property
    def idle(self) -> bool:
        return self._request is None

    # -- asyncio's calls -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, (tuple, list)) and peer else None
        self._server.connections.add(self)
        self._enter(HEAD, self._loop.time())

    def data_received(self, data: bytes) -> None:
        now = self._last = self._loop.time()
        request = self._request
        if request is not None and not request.content.is_eof():
            if self._phase == BODY:
                self._body_bytes += len(data)
            used = self._feed_body(request, data)
            if used == len(data):
                return
            data = data[used:]
        elif self._phase == IDLE:
            self._enter(HEAD, now)
        self._buf += data
        if self._request is None:
            self._parse()
        elif len(self._buf) > PIPELINE_HIGH:
            self._pause()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._phase = CLOSED
        self.transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._server.connections.discard(self)
        try:
            request, task = self._request, self._task
            if request is not None:
                request.content.fail(ConnectionResetError("the device closed the connection"))
            if task is not None and not task.done():
                task.cancel()  # the handler ends wherever it waits (a held Ping's backend wait)
            drain = self._drain
            if drain is not None and not drain.done():
                drain.set_exception(ConnectionResetError("the device closed the connection"))
                drain.exception()  # retrieved: nobody may be waiting on it
        finally:
            if self._outermost:
                self._gate.release()

    def pause_writing(self) -> None:
        self._write_paused_at = self._loop.time()
        self._rearm()

    def resume_writing(self) -> None:
        self._write_paused_at = None
        drain = self._drain
        if drain is not None:
            self._drain = None
            if not drain.done():
                drain.set_result(None)

    # -- reading -------------------------------------------------------------------------

    def _parse(self) -> None:
        """Parse the next request's head from the buffer and start serving it."""
        if not self._buf or self.transport is None:
            return
        if self._phase == IDLE:
            self._enter(HEAD, self._loop.time())
        buf, checked = self._buf, self._checked
        if (
            checked
            and len(buf) < checked + max(RECHECK, checked // 4)
            and buf.find(b"\r\n\r\n", max(0, checked - 3)) < 0
        ):
            return  # still no end of head, and too little new to check it all again
        try:
            parsed = parse_head(buf, self._server.parser_limits)
        except BadRequest as exc:
            self._bad_head(exc)
            return
        if parsed is None:
            self._checked = len(buf)
            return
        self._checked = 0
        head, end = parsed
        del self._buf[:end]
        request = self._request = DeviceRequest(self, head)
        if self._buf and not request.content.is_eof():
            used = self._feed_body(request, self._buf)
            del self._buf[:used]
        now = self._loop.time()
        if request.content.is_eof():
            self._enter(WAIT, now)
        else:
            self._body_since, self._body_bytes = now, 0
            self._enter(BODY, now)
        self._task = self._loop.create_task(self._run(request))

    def _feed_body(self, request: DeviceRequest, data: bytes | bytearray) -> int:
        body = request.content
        if body.failed:
            return len(data)  # nothing after a broken body can be framed: dropped
        try:
            used = body.feed(data)
        except BadRequest as exc:  # the handler answers it (400, counted and logged there)
            body.fail(BrokenBody(f"chunked body: {exc.reason}"))
            self._pause()  # nothing after it can be framed: the connection ends with the answer
            return len(data)
        if body.discarding and body.over_discard_limit:
            self._close()  # an unread body too large to drop: the connection ends
            return len(data)
        if body.is_eof():
            if self._phase == BODY:
                self._enter(WAIT, self._loop.time())
            if body.discarding and request.complete and self._task is None:
                self._next(request)
        elif body.buffered > BODY_HIGH:
            self._pause()
        return used

    def _pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
            self._read_paused_at = self._loop.time()  # the gateway, not the device, stopped it

    def resume_body(self) -> None:
        """The handler wants more of the body: read again."""
        if self._paused and len(self._buf) <= PIPELINE_HIGH:
            self._resume()

    def _resume(self) -> None:
        if not self._paused or self.transport is None:
            return
        self._paused = False
        self.transport.resume_reading()
        if self._read_paused_at is not None:
            now = self._loop.time()
            self._body_since += now - self._read_paused_at
            self._last, self._read_paused_at = now, None
            self._rearm()

    def _bad_head(self, exc: BadRequest) -> None:
        """A head that cannot be served: its status and a fixed text, then close."""
        self._gate.bad_http(exc.kind, exc.reason)
        answer = responses.error(exc.status, error_text(exc.status))
        response = web.Response(status=answer.status, headers=answer.headers, body=answer.body)
        self._write_answer((1, 1), response, keep_alive=False)
        self._close()

    # -- serving ---------------------------------------------------------------------------

    async def _run(self, request: DeviceRequest) -> None:
        try:
            try:
                response: web.StreamResponse | None = await self._server.handler(request)
            except asyncio.CancelledError:
                self._close(abort=True)
                return
            except Exception as exc:
                response = self._failed(request, exc)
            if response is None or (request.started and not request.complete):
                self._close(abort=True)
                return
            keep = True
            if not request.started:
                keep = self._keep(request, response)
                self._write_answer(request.head.version, response, keep_alive=keep)
            elif not self._keep(request, response):
                keep = False
            if self._write_paused_at is not None:
                await self.write(b"")  # the next request only once the device reads this answer
        except (ConnectionError, asyncio.CancelledError):
            self._close(abort=True)
            return
        except Exception as exc:  # an answer that cannot be written (a bad header value)
            log.error("unhandled_error", status=500, exc_info=exc)
            self._close(abort=True)
            return
        self._task = None
        if not keep:
            self._close()
        elif request.content.is_eof():
            self._next(request)
        # else: the rest of the body is being dropped; _feed_body calls _next at its end

    def _keep(self, request: DeviceRequest, response: web.StreamResponse) -> bool:
        """Whether the connection carries another request after this answer."""
        if not request.keep_alive or response.keep_alive is False or self._server.closing:
            return False
        body = request.content
        return not body.failed and (body.is_eof() or body.discard())

    def _next(self, request: DeviceRequest) -> None:
        if request.content.over_discard_limit:
            self._close()
            return
        self._request = None
        if self.transport is None:
            return
        self._enter(IDLE, self._loop.time())
        self._resume()
        self._parse()

    def _failed(self, request: DeviceRequest, exc: Exception) -> web.StreamResponse | None:
        """The answer to an exception escaping the handler, or None (close)."""
        if isinstance(exc, FramingError):  # the body's chunked framing broke, unanswered
            self._gate.bad_http(exc.kind, exc.message)
            status = exc.http_status
        elif isinstance(exc, ConnectionError) or self.transport is None:
            log.debug("client_gone", error=type(exc).__name__)
            return None
        else:
            log.error("unhandled_error", status=500, exc_info=exc)
            status = 500
        if request.started:
            return None
        answer = responses.error(status, error_text(status))
        response = web.Response(status=answer.status, headers=answer.headers, body=answer.body)
        response.force_close()
        return response

    # -- writing ---------------------------------------------------------------------------

    def _write_answer(
        self, version: tuple[int, int], response: web.StreamResponse, *, keep_alive: bool
    ) -> None:
        transport = self.transport
        if transport is None:
            return
        body = getattr(response, "body", None)
        if not isinstance(body, (bytes, bytearray)):
            body = b""
        length = f"Content-Length: {len(body)}\r\n"
        self._server.writer.write(
            transport, answer_head(version, response, length, keep_alive) + body
        )

    def answer_now(self, request: DeviceRequest, response: web.Response) -> bool:
        """``DeviceRequest.answer_now``."""
        if request.started or self.transport is None or request is not self._request:
            return False
        keep = self._keep(request, response)
        if not keep:
            request.head.keep_alive = False  # _run closes the connection after the handler
        self._write_answer(request.head.version, response, keep_alive=keep)
        request.started = request.whole = True
        return True

    def start_stream(self, request: DeviceRequest, response: web.StreamResponse) -> AnswerStream:
        """Write a streamed answer's head (``DeviceRequest.prepare``)."""
        if self.transport is None:
            raise ConnectionResetError("the device closed the connection")
        version = request.head.version
        declared = response.headers.get("Content-Length")
        length = int(declared) if declared is not None and declared.isdigit() else None
        chunked = length is None and version >= (1, 1)
        keep = self._keep(request, response) and (length is not None or chunked)
        if not keep:
            request.head.keep_alive = False
        if length is not None:
            framing = f"Content-Length: {length}\r\n"
        else:
            framing = "Transfer-Encoding: chunked\r\n" if chunked else ""
        self._server.writer.write(self.transport, answer_head(version, response, framing, keep))
        request.started = True
        return AnswerStream(self, length, chunked)

    async def write(self, data: bytes) -> None:
        """Write ``data``; wait while the device's side of the socket is full."""
        transport = self.transport
        if transport is None:
            raise ConnectionResetError("the device closed the connection")
        if data:
            self._server.writer.write(transport, data)
        if self._write_paused_at is None:
            return
        drain = self._drain
        if drain is None:
            drain = self._drain = self._loop.create_future()
        await drain

    # -- closing ---------------------------------------------------------------------------

    def _close(self, abort: bool = False) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            self._server.writer.flush(transport)  # what was written goes first, as before an abort
            if abort:
                transport.abort()
            else:
                transport.close()

    def close(self) -> None:
        """Close after what has been written (``DeviceRequest.close``)."""
        self._close()

    def _send_now(self, data: bytes) -> None:  # PhaseClock's 408, behind what waits
        transport = self.transport
        if transport is not None:
            self._server.writer.flush(transport)
            transport.write(data)

    def force_close(self) -> None:  # PhaseClock's expiry
        self._close(abort=True)

    def close_idle(self) -> None:
        if self._request is None:
            self._close()

    async def shutdown(self, timeout: float | None) -> None:
        """Let the request in flight finish (up to ``timeout``), then close."""
        task = self._task
        if task is not None and not task.done():
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if not done:
                task.cancel()
                await asyncio.wait({task}, timeout=1.0)
        self._close(abort=self._request is not None)


class DeviceServer:
    """The connections of a device listener and their handler."""

    def __init__(self, handler: Handler, parser_limits: Limits) -> None:
        self.handler = handler
        self.parser_limits = parser_limits
        self.connections: set[DeviceConnection] = set()
        self.closing = False
        self.writer = TurnWriter()

    def connection(self, gate: ConnectionGate, *, outermost: bool) -> DeviceConnection:
        return DeviceConnection(self, gate, outermost=outermost)

    def pre_shutdown(self) -> None:
        """Stop keeping connections alive; close the idle ones."""
        self.closing = True
        for conn in list(self.connections):
            conn.close_idle()

    async def shutdown(self, timeout: float | None = None) -> None:
        conns = list(self.connections)
        if conns:
            await asyncio.gather(*(c.shutdown(timeout) for c in conns))
        self.connections.clear()


class DeviceRunner(web.BaseRunner):
    """The aiohttp runner of a ``DeviceServer`` (so ``GatedSite`` and the
    gateway's shutdown treat both listeners alike)."""

    __slots__ = ("_device_server",)

    def __init__(self, server: DeviceServer, **kwargs: Any) -> None:
        super().__init__(handle_signals=False, **kwargs)
        self._device_server = server

    async def shutdown(self) -> None:
        pass

    async def _make_server(self) -> Any:
        return self._device_server

    async def _cleanup_server(self) -> None:
        pass
