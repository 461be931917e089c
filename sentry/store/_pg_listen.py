"""``FeedListener``: LISTEN on the change feed's channel, over reconnects.

Approach. One dedicated connection (never a pool's: a pooled connection is
reset between uses, which drops its LISTEN) registers a listener; each
notification ``"<seq> <node>"`` becomes a ``FeedSignal`` in a queue the async
iterator reads. Notifications are a wake-up call, not the data: a node
applies what ``PostgresStore.changes_since`` returns, so a lost or duplicated
notification costs nothing but a query.

When the connection is lost (terminated, the server restarted, or the
keepalive ``SELECT 1`` that runs after ``keepalive`` seconds of silence fails
or times out: a cut-off server sends nothing at all), the listener reconnects
with backoff (``DELAYS``) and, once LISTENing again, yields a ``resumed``
signal: notifications may have been missed, so the consumer catches up from
its last applied sequence number. The very first signal is ``resumed`` too
(it covers the changes between the consumer's load and the LISTEN).
``connected``, ``reconnects`` and ``problem`` say how it is doing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from ._pg_faults import classify, problem_of
from .base import StoreProblem

__all__ = ["DELAYS", "FeedListener", "FeedSignal"]

DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)
"""Pauses between reconnection attempts (the last one repeats)."""


@dataclass(frozen=True, slots=True)
class FeedSignal:
    """A feed row was committed (``seq``, by ``node``), or ``resumed``: the
    listener (re)connected and may have missed rows (``seq`` is None then)."""

    seq: int | None
    node: str | None
    resumed: bool = False


_RESUMED = FeedSignal(None, None, resumed=True)
_LOST = object()
_CLOSED = object()


class FeedListener:
    """An async iterator of ``FeedSignal``s that survives reconnects."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[Any]],
        channel: str,
        *,
        keepalive: float = 5.0,
        where: str = "the change feed",
    ) -> None:
        self._connect_fn = connect
        self.channel = channel
        self.keepalive = keepalive
        self.where = where
        self._conn: Any = None
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._closed = False
        self.reconnects = -1  # the first connection is not a reconnection
        self.problem: StoreProblem | None = None

    @property
    def connected(self) -> bool:
        return self._conn is not None

    async def __aenter__(self) -> FeedListener:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __aiter__(self) -> FeedListener:
        return self

    async def __anext__(self) -> FeedSignal:
        while not self._closed:
            if self._conn is None:
                await self._reconnect()
                if self._conn is not None:
                    return _RESUMED
                continue
            try:
                item = await asyncio.wait_for(self._queue.get(), self.keepalive)
            except TimeoutError:
                if not await self._alive():
                    await self._drop()
                continue
            if item is _LOST:
                await self._drop()
            elif isinstance(item, FeedSignal):
                return item
        raise StopAsyncIteration

    async def _reconnect(self) -> None:
        attempt = 0
        while not self._closed:
            try:
                conn = await self._connect_fn()
            except Exception as exc:
                fault = classify(exc)
                if fault is None:
                    raise
                self.problem = problem_of(exc, fault, self.where)
                await asyncio.sleep(DELAYS[min(attempt, len(DELAYS) - 1)])
                attempt += 1
                continue
            try:
                await conn.add_listener(self.channel, self._notified)
            except Exception:
                await _close(conn)
                await asyncio.sleep(DELAYS[min(attempt, len(DELAYS) - 1)])
                attempt += 1
                continue
            except BaseException:  # cancelled meanwhile: the connection is not kept
                conn.terminate()
                raise
            conn.add_termination_listener(self._terminated)
            self._conn, self.problem = conn, None
            self.reconnects += 1
            return

    def _notified(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        seq, _, node = payload.partition(" ")
        try:
            self._queue.put_nowait(FeedSignal(int(seq), node or None))
        except ValueError:  # someone else's NOTIFY on the channel: check the feed
            self._queue.put_nowait(_RESUMED)

    def _terminated(self, conn: Any) -> None:
        if conn is self._conn:
            self._queue.put_nowait(_LOST)

    async def _alive(self) -> bool:
        try:
            await self._conn.fetchval("SELECT 1", timeout=self.keepalive)
        except Exception as exc:
            fault = classify(exc)
            if fault is None:
                raise
            self.problem = problem_of(exc, fault, self.where)
            return False
        return True

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await _close(conn)

    async def close(self) -> None:
        """Stop listening; the iterator ends."""
        self._closed = True
        self._queue.put_nowait(_CLOSED)
        await self._drop()


async def _close(conn: Any) -> None:
    try:
        await asyncio.wait_for(conn.close(), 2.0)
    except Exception:
        with contextlib.suppress(Exception):
            conn.terminate()
