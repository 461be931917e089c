"""Small asyncio helpers shared by the I/O layers.

``create_task`` names every task and keeps a strong reference until it ends, so
a background task can never be garbage-collected mid-flight (the asyncio docs'
warning); a bare ``asyncio.create_task`` is banned by the lint configuration.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["create_task"]

T = TypeVar("T")
_background: set[asyncio.Task[Any]] = set()


def create_task(coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
    """Start ``coro`` as a named task and keep a reference to it until it ends."""
    task = asyncio.create_task(coro, name=name)  # noqa: TID251
    _background.add(task)
    task.add_done_callback(_background.discard)
    return task
