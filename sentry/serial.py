"""Jobs run one at a time, in order, by one task, under a lock: the commit
queue of ``AccessState`` (``sentry.access``).

Why. On a saturated event loop every hand-over costs a turn of the loop
(tens of milliseconds at 64 connections). Callers that each take an
``asyncio.Lock`` and run their step in a task of their own pay about seven
turns a step when they queue: the lock handed from waiter to waiter, the
task started, its result coming back through ``shield``. Here one task (the
runner) takes the waiting jobs back to back, so a job costs only the turns
its own awaits take (``bench/bench_commits.py``: 20 queued commits in 0.46x
the time).

What a caller sees is what the lock and the task gave it:

* jobs run in the order ``run`` was called, each after the last has ended;
* the lock is taken for each job: free, that costs no turn, and a step that
  waits for it itself (a store recovery) comes in between two jobs, not
  after the whole queue;
* a caller cancelled before its job started is dropped; one cancelled later
  waits until the job has ended (it is never stopped half-way), then its
  cancellation propagates;
* a job that raises fails its own caller only;
* a job runs with its caller's context variables set (the log lines it
  writes carry the caller's request fields); the runner itself starts in an
  empty context, so no caller's fields leak into another's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sentry.aio import create_task

__all__ = ["SerialRunner"]

T = TypeVar("T")


@dataclass(slots=True, eq=False)
class _Job(Generic[T]):
    job: Callable[[], Awaitable[T]]
    context: contextvars.Context
    """The caller's context: its variables are set while the job runs."""
    future: asyncio.Future[T]
    started: bool = False
    """The job has begun: it goes on to its end, whatever the caller does."""
    abandoned: bool = False
    """The caller was cancelled before it started: it is skipped."""


class SerialRunner:
    """Runs ``run``'s jobs one at a time, in order, under ``lock``."""

    def __init__(self, lock: asyncio.Lock, *, name: str) -> None:
        self._lock = lock
        self._name = name
        self._queue: deque[_Job[Any]] = deque()
        self._runner: asyncio.Task[None] | None = None

    async def run(self, job: Callable[[], Awaitable[T]]) -> T:
        """``job()`` awaited by the runner after every job queued before it."""
        loop = asyncio.get_running_loop()
        item: _Job[T] = _Job(job, contextvars.copy_context(), loop.create_future())
        self._queue.append(item)
        if self._runner is None:
            # started in an empty context: the runner serves every caller, and
            # must not carry the first one's context into the others' jobs
            self._runner = contextvars.Context().run(create_task, self._drain(), name=self._name)
        try:
            return await asyncio.shield(item.future)
        except asyncio.CancelledError:
            if not item.started:
                item.abandoned = True
                raise
            while not item.future.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait([item.future])
            if not item.future.cancelled():
                item.future.exception()  # retrieved: the caller's cancellation propagates
            raise

    async def _drain(self) -> None:
        item: _Job[Any] | None = None
        try:
            while self._queue:
                item = self._queue.popleft()
                if item.abandoned:
                    continue
                async with self._lock:
                    if item.abandoned:  # cancelled while the lock was awaited
                        continue
                    item.started = True
                    try:
                        result = await self._in_context(item)
                    except asyncio.CancelledError:
                        raise
                    except BaseException as exc:
                        if not item.future.done():
                            item.future.set_exception(exc)
                        if not isinstance(exc, Exception):
                            raise
                    else:
                        if not item.future.done():
                            item.future.set_result(result)
                item = None
        finally:
            # Only a cancelled runner (the loop shutting down) leaves waiters.
            for left in (*([item] if item is not None else []), *self._queue):
                if not left.future.done():
                    left.future.cancel()
            self._queue.clear()
            self._runner = None

    @staticmethod
    async def _in_context(item: _Job[T]) -> T:
        tokens = [(var, var.set(value)) for var, value in item.context.items()]
        try:
            return await item.job()
        finally:
            for var, token in reversed(tokens):
                var.reset(token)
