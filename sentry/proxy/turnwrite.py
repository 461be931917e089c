"""A loop turn's writes, sent together at the turn's end.

Approach. A saturated gateway serves many requests in one turn of its event
loop: each request's Python runs, then its answer (or its request to the
mail server) is written. ``transport.write`` sends at once, so the sends came
one at a time, spread over the turn, and each woke its receiver (the phone's
side, the mail server) while the next request's Python still ran: the mail
server woke about once a request behind the gateway and half as often
behind the bare forwarder, whose writes come in bursts (bench/README.md,
"2026-12-05 (day)"). ``TurnWriter`` keeps a turn's writes per transport and
sends them all in one callback queued with ``call_soon``, which runs at the
start of the next turn, before that turn's I/O callbacks: a receiver woken by
the first send finds the rest already there.

The rules that keep a transport's stream intact:

* every write to a transport goes through its writer (its bytes stay in
  order with the ones that wait);
* a write of ``SEND_AT`` bytes or more goes out at once with what waits
  before it (a streamed body: flow control, ``pause_writing``, sees it as
  before; a turn's small writes are bounded by the turn);
* once ``SEND_MANY`` transports have bytes waiting, they are all sent at
  once: a burst of answers (a bulk block ending a thousand held Pings in one
  pass) leaves in batches as it is written, the first not waiting for the
  last to be built;
* ``flush`` before ``close`` or ``abort``, where what was written must go
  first (an answer cut off after its head); a transport aborted without it
  (a backend request abandoned) or lost meanwhile is skipped, its bytes
  dropped, as asyncio drops its own buffer on ``abort``;
* one transport's failing write does not keep the others' bytes back: it is
  logged and that transport aborted.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import structlog

__all__ = ["SEND_AT", "SEND_MANY", "TurnWriter", "Writable"]

log = structlog.get_logger("sentry.http")

SEND_AT = 16 * 1024  # a write this large goes out at once (a streamed body's piece)
SEND_MANY = 128  # this many transports waiting: send them all now (a burst leaves in batches)


class Writable(Protocol):
    """What the writer needs of a transport (asyncio's, ``TlsConnection``)."""

    def write(self, data: bytes) -> None: ...

    def is_closing(self) -> bool: ...

    def abort(self) -> None: ...


class TurnWriter:
    """The writes of one loop turn, per transport, sent at the turn's end."""

    __slots__ = ("_pending", "_scheduled")

    def __init__(self) -> None:
        self._pending: dict[Writable, list[bytes]] = {}  # in the order of first writes
        self._scheduled = False

    def write(self, transport: Writable, data: bytes) -> None:
        """Send ``data`` on ``transport`` at the end of this turn (or at once, when large)."""
        if not data:
            return
        pending = self._pending
        waiting = pending.get(transport)
        if len(data) >= SEND_AT:
            if waiting is not None:
                del pending[transport]
                waiting.append(data)
                data = b"".join(waiting)
            transport.write(data)
            return
        if waiting is not None:
            waiting.append(data)
            return
        pending[transport] = [data]
        if len(pending) >= SEND_MANY:
            self._send_pending()  # the turn's callback stays queued for what follows
        elif not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._send_all)

    def flush(self, transport: Writable) -> None:
        """Send what waits for ``transport`` now (before a close or an abort)."""
        waiting = self._pending.pop(transport, None)
        if waiting is not None and not transport.is_closing():
            transport.write(waiting[0] if len(waiting) == 1 else b"".join(waiting))

    def waiting(self, transport: Writable) -> int:
        """The bytes waiting for ``transport`` (0 once sent)."""
        return sum(map(len, self._pending.get(transport, ())))

    def _send_all(self) -> None:
        self._scheduled = False
        self._send_pending()

    def _send_pending(self) -> None:
        pending, self._pending = self._pending, {}
        for transport, waiting in pending.items():
            if transport.is_closing():
                continue  # aborted (or lost) meanwhile: asyncio would drop these too
            try:
                transport.write(waiting[0] if len(waiting) == 1 else b"".join(waiting))
            except Exception as exc:  # a transport's bug must not hold the others' bytes
                log.error("write_failed", exc_info=exc)
                transport.abort()
