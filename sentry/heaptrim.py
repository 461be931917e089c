"""Give the C heap's free memory back after a burst of new connections (glibc).

Approach. A burst of new device connections (the phones of a start, a
reconnect storm after a network blip) allocates and frees a lot on the C
heap: OpenSSL's handshake state, its memory BIOs, buffers larger than
Python's small-object allocator serves. glibc's ``malloc`` keeps what was
freed inside its heaps for later, so a node that went through a burst holds
more resident memory than the connections it keeps need. Measured on a
gateway holding 9,500 TLS Pings after 22 s of handshakes: ``malloc_trim(0)``
gave back 16 MB of its 408 MB, 1.7 KiB per held Ping.

A trim of a heap that size takes 13-33 ms, too long for the event loop, and
it is only worth doing once a burst is over. So a ``HeapTrimmer`` looks once
per ``interval`` at how many connections the device listener accepted
(``Arrivals``, counted by its connection gate): when at least ``after`` came
since the last trim and two intervals in a row brought under a tenth of the
busiest interval since then (the burst has ended: one slow second inside a
ramp is not its end; a node whose phones keep arriving at a steady rate is
not trimmed every ``after``), it calls
``malloc_trim(0)`` in a thread (ctypes releases the GIL for the call, so the
loop goes on serving, waiting only when it needs ``malloc``'s lock meanwhile).
A loop that allocates every millisecond waits nearly the whole trim anyway:
``bench/bench_heaptrim.py`` gave back 243 MB in 9-11 ms, and such a loop was
late by 9-11 ms, as with the trim on the loop itself; once per burst.
Each trim is counted (``sentry_heap_trims_total``), with the resident memory
it gave back (``sentry_heap_trim_released_bytes_total``, read from
``/proc/self/statm``) and a log line ``heap_trimmed``. Off where the C library is not glibc
(musl has no ``malloc_trim``) and with ``gateway.connections.heap_trim_after: 0``.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import platform
import time
from collections.abc import Callable

import structlog

from sentry.aio import cancel_wait, create_task
from sentry.observability import Metrics

__all__ = ["Arrivals", "HeapTrimmer", "malloc_trim", "resident_bytes"]

log = structlog.get_logger("sentry")

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


QUIET = 2
"""Quiet intervals in a row that end a burst."""


class Arrivals:
    """Connections accepted by the device listener (its gate adds one each)."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


def _load_malloc_trim() -> Callable[[int], int] | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


malloc_trim = _load_malloc_trim()
"""glibc's ``malloc_trim`` (returns 1 when memory was released), or None."""


def resident_bytes() -> int:
    """This process's resident memory (``/proc/self/statm``), 0 when unknown."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


class HeapTrimmer:
    """One ``malloc_trim(0)`` after each burst of ``after`` new connections."""

    def __init__(
        self,
        arrivals: Arrivals,
        metrics: Metrics,
        *,
        after: int,
        interval: float = 1.0,
        trim: Callable[[int], int] | None = malloc_trim,
    ) -> None:
        self.arrivals = arrivals
        self.metrics = metrics
        self.after = after
        self.interval = interval
        self._trim = trim
        self._task: asyncio.Task[None] | None = None
        self._since = 0  # arrivals at the last trim
        self._seen = 0  # arrivals at the last look
        self._peak = 0  # the most arrivals in one interval since the last trim
        self._quiet = 0  # intervals in a row under a tenth of the peak

    @property
    def enabled(self) -> bool:
        return self._trim is not None and self.after > 0

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = create_task(self._loop(), name="heap-trim")

    async def close(self) -> None:
        await cancel_wait(self._task)
        self._task = None

    def due(self) -> bool:
        """Whether at least ``after`` arrivals came since the last trim and
        their burst is over: ``QUIET`` intervals in a row each brought under a
        tenth of the busiest one since that trim. Notes the look."""
        now = self.arrivals.count
        recent, self._seen = now - self._seen, now
        self._peak = max(self._peak, recent)
        self._quiet = self._quiet + 1 if recent * 10 < self._peak else 0
        return now - self._since >= self.after and self._quiet >= QUIET

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if self.due():
                await self.trim_now()

    async def trim_now(self) -> int:
        """Trim in a thread; the resident bytes it gave back (0 when none)."""
        trim = self._trim
        if trim is None:
            return 0
        self._since, self._peak, self._quiet = self.arrivals.count, 0, 0
        released, seconds = await asyncio.to_thread(_timed, trim)
        self.metrics.heap_trims.inc()
        self.metrics.heap_trim_released.inc(released)
        log.info(
            "heap_trimmed",
            released_bytes=released,
            duration_ms=round(seconds * 1e3, 1),
            connections=self._since,
        )
        return released


def _timed(trim: Callable[[int], int]) -> tuple[int, float]:
    """``trim(0)`` with the resident bytes it gave back and its seconds, both
    read in the trimming thread right around the call (not counting the
    loop's own allocations meanwhile, nor its delay in taking the result)."""
    before = resident_bytes()
    t0 = time.perf_counter()
    trim(0)
    seconds = time.perf_counter() - t0
    return max(0, before - resident_bytes()), seconds
