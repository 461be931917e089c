"""The store under watch: a ``Store`` that knows when changes stop being durable.

Approach. ``WatchedStore`` wraps the real store and keeps one piece of state,
the current ``StoreProblem`` (None while healthy). It learns of a problem in
three ways:

* a store call fails with ``StoreUnavailable`` (the SQLite store checks after
  every write that its path still names the file it wrote to, and turns SQLite
  and OS errors about its files into faults);
* the periodic cheap check (``Store.check``: deleted, replaced, unwritable),
  every ``interval`` seconds;
* after any failure, one integrity check in the background (``quick_check``:
  corruption).

While a problem is set, writes are refused at once with ``StoreUnavailable``
(nothing is attempted, so nothing is half-written and nothing is acknowledged
that a restart would lose); reads go on, since the file the store holds open
still matches the memory. The access state then decides requests as "registry
unreachable" (design §5.9) and the admin API answers changes with 503.

Recovery. Transient faults (read-only, full, I/O error, busy) are retried at
every interval with a probe write, and the store is healthy again when it
succeeds. Permanent faults (deleted, replaced, corrupt) stay until an operator
acts: the memory and the file the gateway still holds open are then the only
full copy of the state, and a restart would start from whatever is (or is not)
at the path. For a deleted or replaced file, ``recover`` writes that copy back
to the path (``POST /api/store/recover``); the log event says what to do.

Every state change is one log event (``store_degraded``, ``store_recovered``)
and shows in ``sentry_store_healthy``, ``sentry_store_fault{kind}`` and
``sentry_store_errors_total{kind}``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

import structlog

from sentry.aio import cancel_wait, create_task
from sentry.model import Association, AssociationKey, AuditEntry, HistoryEvent
from sentry.observability import Metrics
from sentry.policy import Change, Snapshot
from sentry.store.base import (
    AssociationFilter,
    AuditFilter,
    Store,
    StoreError,
    StoreFault,
    StoreProblem,
    StoreUnavailable,
)

__all__ = ["Recoverable", "StoreStatus", "WatchedStore", "recovery_advice"]

log = structlog.get_logger("sentry.store")
T = TypeVar("T")


@runtime_checkable
class Recoverable(Protocol):
    """A store that can write the state it holds open back to its path."""

    async def recover(self) -> None: ...


_ADVICE = {
    StoreFault.DELETED: (
        "the state lives on in memory and in the file the gateway holds open: "
        "POST /api/store/recover (sentry admin store recover) writes it back to store.path; "
        "a restart now would start from an empty store"
    ),
    StoreFault.REPLACED: (
        "to keep the gateway's state, move the new file (and its -wal/-shm) aside, then "
        "POST /api/store/recover (sentry admin store recover); to use the new file instead, "
        "restart the gateway (changes since it was put there are lost)"
    ),
    StoreFault.CORRUPT: (
        "the gateway keeps deciding from memory and refuses changes; stop it, move the "
        "damaged file (and its -wal/-shm) aside and restore a backup"
    ),
}


_FIX = {
    StoreFault.UNREACHABLE: "start the database server or restore the network path to it",
    StoreFault.REFUSED: (
        "fix the credentials (store.password_file, PGPASSWORD, PGPASSFILE), pg_hba.conf "
        "or the database name"
    ),
}


def recovery_advice(fault: StoreFault, interval: float) -> str:
    """What an operator should do about ``fault``."""
    fix = _FIX.get(fault, "fix the permissions, free space or the disk")
    transient = (
        f"retried every {interval:g} s: the store recovers by itself once a write "
        f"succeeds again ({fix})"
    )
    return _ADVICE.get(fault, transient)


@dataclass(frozen=True, slots=True)
class StoreStatus:
    """The store's health, for ``/readyz`` and the admin API."""

    problem: StoreProblem | None
    since: float | None  # Unix seconds of the last state change
    advice: str | None

    @property
    def healthy(self) -> bool:
        return self.problem is None


class WatchedStore:
    """A ``Store`` that refuses writes while its files are known to be failing."""

    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        *,
        interval: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.inner = store
        self.metrics = metrics
        self.interval = interval
        self.clock = clock
        self.problem: StoreProblem | None = None
        self._since: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._refining = False

    # -- state -----------------------------------------------------------------

    @property
    def status(self) -> StoreStatus:
        """The current health."""
        p = self.problem
        advice = None if p is None else recovery_advice(p.fault, self.interval)
        return StoreStatus(p, self._since, advice)

    def _enter(self, problem: StoreProblem, during: str) -> None:
        """Become degraded with ``problem`` (a permanent fault is never
        replaced by a transient one); one log event per change of fault."""
        current = self.problem
        if current is not None and (
            current.fault is problem.fault
            or (current.fault.permanent and not problem.fault.permanent)
        ):
            return
        self.problem, self._since = problem, self.clock()
        self._publish()
        log.error(
            "store_degraded",
            fault=problem.fault.value,
            detail=problem.detail,
            during=during,
            permanent=problem.fault.permanent,
            recovery=recovery_advice(problem.fault, self.interval),
        )

    def _recovered(self, how: str) -> None:
        was, since = self.problem, self._since
        if was is None:
            return
        self.problem, self._since = None, self.clock()
        self._publish()
        after = None if since is None else round(self._since - since, 3)
        log.warning("store_recovered", fault=was.fault.value, after_seconds=after, how=how)

    def _publish(self) -> None:
        current = None if self.problem is None else self.problem.fault
        self.metrics.store_healthy.set(1 if current is None else 0)
        for fault in StoreFault:
            self.metrics.store_fault.labels(fault.value).set(1 if fault is current else 0)

    def _failed(self, problem: StoreProblem, during: str) -> None:
        """A store operation failed: count it, degrade, check integrity."""
        self.metrics.store_errors.labels(problem.fault.value).inc()
        self._enter(problem, during)
        if not self._refining and problem.fault is not StoreFault.CORRUPT:
            self._refining = True
            create_task(self._refine(), name="store:integrity-check")

    async def _refine(self) -> None:
        try:
            found = await self.inner.check(integrity=True)
        except StoreError:
            return
        finally:
            self._refining = False
        if found is not None:
            self._enter(found, "integrity_check")

    # -- the periodic check --------------------------------------------------------

    async def tick(self) -> None:
        """One periodic check: detect a new problem, or retry a transient one."""
        current = self.problem
        if current is not None and current.fault.permanent:
            return
        try:
            found = await self.inner.check(probe=current is not None)
        except StoreError:  # closed meanwhile
            return
        if self.problem is not current:
            # A failing operation entered a problem while this check ran (it saw
            # the store before the failure): its finding is newer than this one,
            # and a permanent fault must never be cleared by a stale check.
            return
        if found is None:
            self._recovered("a probe write succeeded")
        elif current is None or found.fault is not current.fault:
            self.metrics.store_errors.labels(found.fault.value).inc()
            self._enter(found, "check")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.tick()

    def start(self) -> None:
        """Start the periodic check."""
        self._publish()
        if self._task is None:
            self._task = create_task(self._watch(), name="store:watch")

    async def stop(self) -> None:
        """Stop the periodic check."""
        await cancel_wait(self._task)
        self._task = None

    # -- recovery by an operator -------------------------------------------------

    async def recover(self) -> None:
        """Write the state back to the path after a deletion or replacement.

        ``StoreUnavailable`` when there is nothing to recover from or the store
        cannot do it (the problem says why)."""
        current = self.problem
        if current is None or current.fault not in (StoreFault.DELETED, StoreFault.REPLACED):
            raise StoreError("recover only applies to a deleted or replaced database file")
        if not isinstance(self.inner, Recoverable):
            raise StoreError("this store cannot be recovered")
        await self.inner.recover()
        found = await self.inner.check(integrity=True, probe=True)
        if found is not None:
            self.problem = None  # let _enter log the new state
            self._enter(found, "recover")
            raise StoreUnavailable(found)
        self._recovered("recovered by an administrator")

    # -- the Store protocol ------------------------------------------------------

    async def _guarded(self, during: str, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except StoreUnavailable as exc:
            self._failed(exc.problem, during)
            raise

    async def load(self) -> Snapshot:
        return await self._guarded("read", self.inner.load)

    async def apply(self, changes: Sequence[Change]) -> None:
        if self.problem is not None:
            raise StoreUnavailable(self.problem)
        await self._guarded("write", lambda: self.inner.apply(changes))

    async def list_associations(
        self, filter: AssociationFilter | None = None, offset: int = 0, limit: int = 100
    ) -> tuple[list[Association], int]:
        return await self._guarded(
            "read", lambda: self.inner.list_associations(filter, offset, limit)
        )

    async def get_association(self, key: AssociationKey) -> Association | None:
        return await self._guarded("read", lambda: self.inner.get_association(key))

    async def history(self, key: AssociationKey) -> list[HistoryEvent]:
        return await self._guarded("read", lambda: self.inner.history(key))

    async def audit(
        self, offset: int = 0, limit: int = 100, filter: AuditFilter | None = None
    ) -> tuple[list[AuditEntry], int]:
        return await self._guarded("read", lambda: self.inner.audit(offset, limit, filter))

    async def check(self, *, integrity: bool = False, probe: bool = False) -> StoreProblem | None:
        return await self.inner.check(integrity=integrity, probe=probe)

    async def close(self) -> None:
        await self.stop()
        await self.inner.close()
