"""Small asyncio helpers shared by the I/O layers.

``create_task`` names every task and keeps a strong reference until it ends, so
a background task can never be garbage-collected mid-flight (the asyncio docs'
warning); a bare ``asyncio.create_task`` is banned by the lint configuration.

``uncancellable`` runs a step that must not stop half-way (a store write and
the in-memory change that follows it) to its end even when the task awaiting
it is cancelled, e.g. because the device hung up; the cancellation is
re-raised once the step is done, so the caller still stops.

``read_upto`` reads a body until its end or ``limit`` bytes: a stream's
``read(n)`` returns what has arrived so far, so a single call takes only the
first TCP segment of a body that came in several (a device's Sync prefix, a
backend's Provision answer, a JWKS document).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any, Protocol, TypeVar

__all__ = ["cancel_wait", "chunks_of", "create_task", "read_upto", "uncancellable"]

T = TypeVar("T")
_background: set[asyncio.Task[Any]] = set()


def create_task(coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
    """Start ``coro`` as a named task and keep a reference to it until it ends."""
    task = asyncio.create_task(coro, name=name)  # noqa: TID251
    _background.add(task)
    task.add_done_callback(_background.discard)
    return task


async def uncancellable(coro: Coroutine[Any, Any, T], *, name: str) -> T:
    """Await ``coro`` in its own task; if the caller is cancelled meanwhile,
    wait for that task to finish, then re-raise the cancellation."""
    task = create_task(coro, name=name)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        while not task.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # retrieved: the caller's cancellation is what propagates
        raise


class _Readable(Protocol):
    async def read(self, n: int = -1, /) -> bytes: ...


async def cancel_wait(task: asyncio.Future[Any] | None) -> None:
    """Cancel ``task`` (when there is one) and wait until it has ended; its
    ``CancelledError`` stops here (a periodic chore's ``close``)."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def chunks_of(content: _Readable, n: int) -> AsyncIterator[bytes]:
    """``content.read(n)`` until it gives ``b""`` (aiohttp's ``iter_chunked``,
    for the gateway's own readers: a device's body, a backend's answer)."""
    while chunk := await content.read(n):
        yield chunk


async def read_upto(content: _Readable, limit: int) -> bytes:
    """``content`` read until its end or until ``limit`` bytes (fewer than
    ``limit``: the end was reached)."""
    parts: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await content.read(limit - size)
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)
