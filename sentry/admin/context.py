"""What every admin handler works with: the access state, the store, the pools.

Approach. ``AdminContext`` is built once by the composition root. Every change
the API makes goes through ``AdminContext.commit``: under the access state's
writer lock (the same lock the request path takes to write) it builds the
change list from the current snapshot with a pure policy function (which
validates everything first and raises on any problem, so nothing is
half-applied) and hands the whole list to ``AccessState.apply_held`` (one
store transaction, then the snapshot, then live revocation of held long
polls). Building under that lock means neither another admin call nor a
request can change a row between the check and the write. On a shared store
(several nodes) a write built on a state another node has changed since is
refused (``StaleState``); the node has then caught up and ``commit`` builds
again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sentry.access import AccessState, StaleState
from sentry.directory.service import DirectorySync
from sentry.policy import Change, Snapshot
from sentry.proxy.redirects import RedirectCache
from sentry.proxy.upstream import Upstreams
from sentry.settings import Settings
from sentry.store_watch import WatchedStore

__all__ = ["AdminContext", "Build", "iso"]

_STALE_RETRIES = 5
"""Builds of one admin change when another gateway node keeps writing first."""

Build = Callable[[Snapshot, float], Sequence[Change]]
"""Builds a change list from (snapshot, now); raises to refuse."""


@dataclass(eq=False)
class AdminContext:
    """The gateway's parts the admin API reads and changes."""

    state: AccessState
    store: WatchedStore
    upstreams: Upstreams
    settings: Settings
    redirects: RedirectCache = field(default_factory=RedirectCache)
    directory: DirectorySync | None = None  # the LDAP sync, when directory.ldap is set

    @property
    def lock(self) -> asyncio.Lock:
        """The access state's writer lock: hold it while building changes."""
        return self.state.writer

    @property
    def snapshot(self) -> Snapshot:
        """The live in-memory state (read it, never change it)."""
        return self.state.snapshot

    def now(self) -> float:
        """The gateway's clock (Unix seconds)."""
        return self.state.clock()

    async def commit(self, build: Build) -> int:
        """Build the changes and apply them in one transaction; return the
        number of held long polls ended. An exception from ``build`` changes
        nothing."""
        for attempt in range(_STALE_RETRIES):
            async with self.lock:
                changes = build(self.snapshot, self.now())
                try:
                    return await self.apply(changes)
                except StaleState:  # another gateway node wrote first: build again
                    if attempt == _STALE_RETRIES - 1:
                        raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def commit_in_thread(self, build: Build, executor: Executor | None = None) -> int:
        """``commit`` with ``build`` run in a worker thread: for a large pure
        plan (a directory sync of thousands of users) that would otherwise hold
        the event loop. The writer lock is held meanwhile, so nothing the plan
        reads changes under it (requests of known associations only move
        last-seen times, which no plan reads); the changes are then applied
        on the loop exactly as ``commit`` applies them."""
        for attempt in range(_STALE_RETRIES):
            async with self.lock:
                loop = asyncio.get_running_loop()
                changes = await loop.run_in_executor(executor, build, self.snapshot, self.now())
                try:
                    return await self.apply(changes)
                except StaleState:
                    if attempt == _STALE_RETRIES - 1:
                        raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def apply(self, changes: Sequence[Change]) -> int:
        """Apply changes built under ``lock`` (callers hold it)."""
        if not changes:
            return 0
        return await self.state.apply_held(changes)


def iso(ts: float | None) -> str | None:
    """Unix seconds as ISO 8601 UTC (``2024-05-01T12:00:00.000Z``); None stays None."""
    if ts is None:
        return None
    text = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")
