"""One device connection with a clock for each phase it can be stalled in.

Approach. aiohttp's server has a single clock, ``keepalive_timeout``, which
runs from the end of one response until the next request's head is parsed
(and is an hour by default): a client that trickles a head one byte a
second, or stops half way through a body, holds its connection and file
descriptor for as long as it likes. ``PhaseClock`` closes that gap for both
kinds of connection the gateway serves: the device listener's own protocol
(``h1server.DeviceConnection``, which moves between the phases itself) and,
for the admin listener, ``GuardedHandler``: aiohttp's own ``RequestHandler``
following the phases from the calls aiohttp already makes into it:

    connection_made ──> HEAD ──(middleware: request_started)──> BODY ──> WAIT
                          ^                                        (body read)
                          └── IDLE <──(finish_response)───────────────┘
                               (first byte of the next request: HEAD)

* HEAD: the head must be complete ``header_timeout`` after the connection was
  accepted (or after the first byte of a kept-alive connection's next request);
* IDLE: a kept-alive connection may wait ``idle_timeout`` for that byte;
* BODY: a byte must arrive at least every ``body_timeout`` seconds, and after
  the first ``body_timeout`` the body must average ``body_min_rate`` bytes a
  second (Apache's mod_reqtimeout rule). Time in which the *gateway* stopped
  reading (back-pressure from a slow backend) is not counted against the device;
* WAIT: the body is read and the gateway is working or waiting upstream —
  a held Ping lives here for up to an hour and no device clock runs;
* in any phase, a response that cannot be written for ``send_timeout``
  (the device stopped reading) ends the connection.

One ``TimerHandle`` per connection is armed at the earliest deadline and,
when it fires early (the deadline moved later as bytes arrived), re-armed;
bytes arriving never touch the timer, so the cost per ``data_received`` is a
clock read and a counter. On expiry the connection is closed (a partial head
gets ``408`` first) and the gate counts it.

``GuardedHandler.handle_error`` replaces aiohttp's (the device listener's
server answers the same way itself): a malformed head is answered with a
short fixed text (never the parser's message, which quotes the raw head,
credentials included), counted as ``http:<error class>``, and logged
rate-limited with the parser's reason stripped of any quoted bytes; an
exception escaping a handler is logged with its traceback through the
redacting logger and answered 500 with a fixed text.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong

from sentry.eas import responses

if TYPE_CHECKING:
    from .connections import ConnectionGate

__all__ = [
    "ConnectionLimits",
    "GuardedHandler",
    "Phase",
    "PhaseClock",
    "error_text",
    "track_phases",
]

log = structlog.get_logger("sentry.http")

HEAD, BODY, WAIT, IDLE, CLOSED = "head", "body", "wait", "idle", "closed"
Phase = str
REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
_QUOTE_MARKERS = (": b'", ': b"', " b'", ' b"', " '", ' "')


@dataclass(frozen=True)
class ConnectionLimits:
    """The clocks of ``GuardedHandler`` (seconds, bytes per second)."""

    header_timeout: float = 20.0
    idle_timeout: float = 75.0
    body_timeout: float = 20.0
    body_min_rate: int = 500
    send_timeout: float = 60.0


class _Pending(list[Any]):
    """aiohttp's queue of parsed requests not yet served, as a list: an empty
    ``deque`` is 624 bytes, an empty list 56, and the queue of a device's
    connection holds one request at a time but for pipelining. aiohttp uses
    ``append``, ``popleft``, ``len`` and truth on it. ``popleft`` of a list
    is O(n): aiohttp stops reading at 32 queued requests, though one read
    (up to 256 KiB) may queue more first; each costs far less to pop than
    the answer the gateway then writes for it."""

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)


class PhaseClock:
    """The clocks of a device connection (module comment), shared by aiohttp's
    protocol (``GuardedHandler``, the admin listener) and the device
    listener's own (``h1server.DeviceConnection``). The class using it keeps
    the fields below and provides ``transport`` and ``force_close``."""

    _loop: asyncio.AbstractEventLoop
    _gate: ConnectionGate
    _limits: ConnectionLimits
    _phase: Phase
    _since: float
    _last: float
    _body_since: float
    _body_bytes: int
    _timer: asyncio.TimerHandle | None
    _read_paused_at: float | None
    _write_paused_at: float | None
    _request: Any

    def _enter(self, phase: Phase, now: float) -> None:
        self._phase, self._since = phase, now
        self._rearm()

    def _rearm(self) -> None:
        due = self._due()
        if due is None:
            return
        timer = self._timer
        if timer is not None:
            if timer.when() <= due[0]:
                return  # fires first and re-arms for the later deadline
            timer.cancel()
        self._timer = self._loop.call_at(due[0], self._check)

    def _due(self) -> tuple[float, str] | None:
        """The earliest deadline of the current phase and its name."""
        lim = self._limits
        due: tuple[float, str] | None = None
        if self._phase == HEAD:
            due = (self._since + lim.header_timeout, HEAD)
        elif self._phase == IDLE:
            due = (self._since + lim.idle_timeout, IDLE)
        elif self._phase == BODY and self._read_paused_at is None:
            due = (self._body_due(), BODY)
        if self._write_paused_at is not None:
            send = (self._write_paused_at + lim.send_timeout, "send")
            due = send if due is None or send[0] < due[0] else due
        return due

    def _body_due(self) -> float:
        lim = self._limits
        stall = self._last + lim.body_timeout
        if lim.body_min_rate <= 0:
            return stall
        rate = self._body_since + lim.body_timeout + self._body_bytes / lim.body_min_rate
        return min(stall, rate)

    def _check(self) -> None:
        self._timer = None
        if self._phase == BODY and self._request is not None and self._request.content.is_eof():
            self._phase = WAIT  # the body was read: from here on only the send clock runs
        due = self._due()
        if due is None or self.transport is None:
            return
        if self._loop.time() < due[0]:
            self._timer = self._loop.call_at(due[0], self._check)
            return
        self._expire(due[1])

    def _expire(self, reason: str) -> None:
        transport = self.transport
        self._gate.timed_out(reason)
        if transport is not None:
            if reason == HEAD and self._last > self._since:
                self._send_now(REQUEST_TIMEOUT)  # a partial head: say why
            elif reason in (BODY, "send"):
                transport.abort()  # a full buffer would hold close() forever
        self._phase = CLOSED
        self.force_close()

    def _send_now(self, data: bytes) -> None:
        """Send ``data`` before the abort that follows (after whatever the
        connection has written and not yet sent)."""
        self.transport.write(data)

    if TYPE_CHECKING:
        transport: Any

        def force_close(self) -> None: ...


class GuardedHandler(PhaseClock, web.RequestHandler):
    """aiohttp's connection protocol with per-phase timeouts (module comment)."""

    __slots__ = (
        "_body_bytes",
        "_body_since",
        "_gate",
        "_last",
        "_limits",
        "_outermost",
        "_phase",
        "_read_paused_at",
        "_request",
        "_since",
        "_timer",
        "_write_paused_at",
    )

    def __init__(
        self, gate: ConnectionGate, manager: web.Server, *, outermost: bool, **kwargs: Any
    ) -> None:
        super().__init__(manager, **kwargs)
        if type(getattr(self, "_messages", None)) is deque:
            self._messages = _Pending()  # type: ignore[assignment]
        self._gate = gate
        self._limits = gate.limits
        self._outermost = outermost  # gives the gate's slot back (else the TLS layer does)
        self._phase: Phase = HEAD
        self._since = self._last = self._body_since = 0.0
        self._body_bytes = 0
        self._request: web.BaseRequest | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._read_paused_at: float | None = None
        self._write_paused_at: float | None = None

    @property
    def phase(self) -> Phase:
        return self._phase

    # -- the calls aiohttp (and the middleware) make ----------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._enter(HEAD, self._loop.time())

    def data_received(self, data: bytes) -> None:
        if not data:  # aiohttp re-feeding its own buffer: no byte from the device
            super().data_received(data)
            return
        now = self._last = self._loop.time()
        if self._phase == BODY:
            self._body_bytes += len(data)
        elif self._phase == IDLE and self._previous_body_done():
            self._enter(HEAD, now)
        super().data_received(data)

    def request_started(self, request: web.BaseRequest) -> None:
        """The head is parsed and the request dispatched (called by ``track_phases``)."""
        self._request = request
        now = self._loop.time()
        if request.content.is_eof():
            self._enter(WAIT, now)
            return
        self._body_since, self._body_bytes = now, 0
        self._enter(BODY, now)

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        result = await super().finish_response(request, resp, start_time)
        if self._phase != CLOSED:
            self._enter(IDLE, self._loop.time())
        return result

    def pause_reading(self) -> None:  # the gateway, not the device, stopped the body
        super().pause_reading()
        self._read_paused_at = self._loop.time()

    def resume_reading(self, resume_parser: bool = True) -> None:
        super().resume_reading(resume_parser)
        if self._read_paused_at is not None:
            now = self._loop.time()
            self._body_since += now - self._read_paused_at
            self._last, self._read_paused_at = now, None
            self._rearm()

    def pause_writing(self) -> None:
        super().pause_writing()
        self._write_paused_at = self._loop.time()
        self._rearm()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._write_paused_at = None

    def connection_lost(self, exc: BaseException | None) -> None:
        self._phase = CLOSED
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            super().connection_lost(exc)
        finally:
            if self._outermost:
                self._gate.release()

    def _previous_body_done(self) -> bool:
        return self._request is None or self._request.content.is_eof()

    # -- errors ---------------------------------------------------------------------------

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        status = self._status_of(status, exc)
        if isinstance(exc, HttpProcessingError):
            self._gate.bad_http(type(exc).__name__, _reason(exc))
        elif isinstance(exc, ConnectionError) or self.transport is None:
            log.debug("client_gone", error=type(exc).__name__)
        else:
            log.error("unhandled_error", status=status, exc_info=exc)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send an error answer")
        answer = responses.error(status, error_text(status))
        resp = web.Response(
            status=answer.status, reason=answer.reason, headers=answer.headers, body=answer.body
        )
        resp.force_close()
        return resp

    def _status_of(self, status: int, exc: BaseException | None) -> int:
        if isinstance(exc, LineTooLong):
            return 414 if exc.args[1:2] == (self.max_line_size,) else 431
        if isinstance(exc, BadHttpMessage) and "Too many headers" in exc.message:
            return 431
        return status


_TEXTS = {
    400: "bad request",
    501: "not implemented",
    414: "request line too long",
    431: "request header fields too large",
    500: "internal server error",
    504: "gateway timeout",
}


def error_text(status: int) -> str:
    """The fixed text of an error the connection answers itself."""
    return _TEXTS.get(status, "error")


def _reason(exc: HttpProcessingError) -> str:
    """The parser's reason without the bytes it quotes (which may hold a credential)."""
    first = str(exc.message).strip().split("\n", 1)[0]
    for marker in _QUOTE_MARKERS:
        cut = first.find(marker)
        if cut >= 0:
            first = first[:cut]
    return first.rstrip(" :.")[:120] or type(exc).__name__


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def track_phases(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tell the connection its request was dispatched (HEAD/IDLE -> BODY/WAIT)."""
    protocol = request.protocol
    if isinstance(protocol, GuardedHandler):
        protocol.request_started(request)
    return await handler(request)
