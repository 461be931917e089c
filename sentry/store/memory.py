"""``MemoryStore``: the in-process store used by tests and the conversation helper.

Approach. It keeps its own ``Snapshot`` (separate from the caller's) plus
lists for history and audit. ``apply`` first checks that every item is a
change; applying known changes to a snapshot cannot fail (every handler is
total), so a list is applied entirely or not at all, like a database
transaction. The synchronous core (``apply_now`` and friends) serves callers
that are not async; the ``Store`` methods wrap it.
"""

from __future__ import annotations

from collections.abc import Sequence

from sentry.model import Association, AssociationKey, AuditEntry, HistoryEvent
from sentry.policy.changes import CHANGE_TYPES, AppendAudit, AppendHistory, Change, MoveHistory
from sentry.policy.snapshot import Snapshot

from .base import AssociationFilter, AuditFilter, StoreError, StoreProblem

__all__ = ["MemoryStore"]


class MemoryStore:
    """A ``Store`` held in memory; passes the same contract suite as SQLite."""

    def __init__(self, snapshot: Snapshot | None = None) -> None:
        self._snapshot = Snapshot() if snapshot is None else snapshot.copy()
        self._history: dict[AssociationKey, list[HistoryEvent]] = {}
        self._audit: list[AuditEntry] = []
        self._closed = False

    # --- Synchronous core ---

    def load_now(self) -> Snapshot:
        """A fresh copy of the stored state."""
        self._check_open()
        return self._snapshot.copy()

    def apply_now(self, changes: Sequence[Change]) -> None:
        """Apply all of ``changes`` or none of them."""
        self._check_open()
        for change in changes:
            if type(change) not in CHANGE_TYPES:
                raise TypeError(f"not a change: {change!r}")
        self._snapshot.apply(changes)  # total once the types are known: cannot fail midway
        for change in changes:
            if isinstance(change, AppendHistory):
                self._history.setdefault(change.key, []).append(change.event)
            elif isinstance(change, AppendAudit):
                self._audit.append(change.entry)
            elif isinstance(change, MoveHistory):
                moved = self._history.pop(change.old, [])
                merged = [*self._history.get(change.new, []), *moved]
                if merged:
                    self._history[change.new] = sorted(merged, key=lambda e: e.at)

    def list_now(
        self, filter: AssociationFilter | None = None, offset: int = 0, limit: int = 100
    ) -> tuple[list[Association], int]:
        """Rows matching ``filter``, ordered by (user, device_id), paged."""
        self._check_open()
        rows = self._snapshot.associations()
        found = [r for r in rows if filter is None or filter.matches(r)]
        found.sort(key=lambda r: (r.key.user, r.key.device_id))
        return found[offset : offset + limit], len(found)

    # --- Store protocol ---

    async def load(self) -> Snapshot:
        return self.load_now()

    async def apply(self, changes: Sequence[Change]) -> None:
        self.apply_now(changes)

    async def list_associations(
        self, filter: AssociationFilter | None = None, offset: int = 0, limit: int = 100
    ) -> tuple[list[Association], int]:
        return self.list_now(filter, offset, limit)

    async def get_association(self, key: AssociationKey) -> Association | None:
        self._check_open()
        return self._snapshot.get(key)

    async def history(self, key: AssociationKey) -> list[HistoryEvent]:
        self._check_open()
        return list(self._history.get(key, ()))

    async def audit(
        self, offset: int = 0, limit: int = 100, filter: AuditFilter | None = None
    ) -> tuple[list[AuditEntry], int]:
        self._check_open()
        newest_first = [e for e in self._audit[::-1] if filter is None or filter.matches(e)]
        return newest_first[offset : offset + limit], len(newest_first)

    async def check(self, *, integrity: bool = False, probe: bool = False) -> StoreProblem | None:
        """Memory never fails (nothing survives a restart either)."""
        self._check_open()
        return None

    async def close(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")
