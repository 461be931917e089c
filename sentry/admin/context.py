"""What every admin handler works with: the access state, the store, the pools.

Approach. ``AdminContext`` is built once by the composition root. Every change
the API makes goes through ``AdminContext.commit``, which is the gateway's one
commit path, ``AccessState.commit``: under the writer lock (the same lock the
request path takes to write) it builds the change list from the current
snapshot with a pure policy function (which validates everything first and
raises on any problem, so nothing is half-applied), writes the whole list in
one store transaction, then applies it to the snapshot with live revocation
of held long polls. Building under that lock means neither another admin
call nor a request can change a row between the check and the write.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sentry.access import AccessState, Build
from sentry.directory.service import DirectorySync
from sentry.policy import Snapshot
from sentry.proxy.redirects import RedirectCache
from sentry.proxy.upstream import Upstreams
from sentry.settings import Settings
from sentry.store_watch import WatchedStore

__all__ = ["AdminContext", "Build", "iso"]


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

    async def commit(self, build: Build, *, answer_first: bool = False) -> int:
        """Build the changes and apply them in one transaction
        (``AccessState.commit``); return the number of held long polls ended.
        An exception from ``build`` changes nothing. ``answer_first``: the
        polls are answered right after this request's own answer has been
        written (the rest of the handler and aiohttp's write of its response
        run before the loop's next turn), not before it resumes."""
        committed = await self.state.commit(build, answer_first=answer_first)
        if committed.held:
            asyncio.get_running_loop().call_soon(self.state.answer_held, committed)
        return committed.ended

    async def commit_in_thread(self, build: Build, executor: Executor | None = None) -> int:
        """``commit`` with ``build`` run in a worker thread: for a large pure
        plan (a directory sync of thousands of users) that would otherwise hold
        the event loop. The writer lock is held meanwhile, so nothing the plan
        reads changes under it (requests of known associations only move
        last-seen times, which no plan reads); the changes are then committed
        on the loop exactly as ``commit`` commits them."""
        return (await self.state.commit(build, in_thread=True, executor=executor)).ended


def iso(ts: float | None) -> str | None:
    """Unix seconds as ISO 8601 UTC (``2024-05-01T12:00:00.000Z``); None stays None."""
    if ts is None:
        return None
    text = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")
