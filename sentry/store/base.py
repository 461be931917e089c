"""The ``Store`` interface: where state persists, behind one protocol.

Approach. The gateway holds its state in memory (a ``Snapshot``) and writes
every change through a store, so a store only needs to: load everything at
start, apply a change list in ONE transaction (all or nothing), and answer the
admin's queries (the association list with filters and paging, one row, a
row's history, the audit log). Implementations: ``MemoryStore`` (tests) and
``SqliteStore`` (the embedded default); both pass ``tests/store``'s contract
suite. The policy types are imported for typing only, so this module stays
below the policy layer at run time (design.md §2).

    StoreError                  the store cannot do what was asked
    ├── StoreOpenError          the store cannot be used at all (start-up)
    │   └── SchemaError         the database's schema is newer than this code
    └── StoreUnavailable        the store can no longer keep changes durably
                                (``problem``: a ``StoreFault`` and what happened)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from sentry.errors import StartupError
from sentry.model import (
    Association,
    AssociationKey,
    AuditEntry,
    HistoryEvent,
    Reason,
    Verdict,
    WipeStatus,
    canonical_device_id,
)

if TYPE_CHECKING:
    from sentry.policy.changes import Change
    from sentry.policy.snapshot import Snapshot

__all__ = [
    "AssociationFilter",
    "AssociationState",
    "AuditFilter",
    "SchemaError",
    "Store",
    "StoreError",
    "StoreFault",
    "StoreOpenError",
    "StoreProblem",
    "StoreUnavailable",
    "association_state",
]


class StoreError(Exception):
    """The store cannot carry out the operation."""


class StoreOpenError(StoreError, StartupError):
    """The store cannot be opened and used: a ``StartupError`` for the setting
    ``key`` (``store.path`` for SQLite, ``store.dsn`` for PostgreSQL; one line,
    exit 2), ``problem`` naming the file or server and what is wrong."""

    def __init__(self, problem: str, key: str = "store.path") -> None:
        StartupError.__init__(self, key, problem)


class SchemaError(StoreOpenError):
    """The database was written by a newer version (unknown schema version)."""


class StoreFault(StrEnum):
    """Why a store cannot keep changes durably (a bounded metric label)."""

    DELETED = "deleted"  # the database (or its write-ahead log) is gone from its path
    REPLACED = "replaced"  # another file is at the database's path now
    CORRUPT = "corrupt"  # the integrity check or a read found damage
    READ_ONLY = "read_only"  # the file, its directory or the filesystem refuses writes
    FULL = "full"  # no space left (disk, quota, file size limit)
    IO_ERROR = "io_error"  # the operating system reported an I/O error
    BUSY = "busy"  # another process held the database locked for too long
    UNREACHABLE = "unreachable"  # the database server is down, cut off or dropped the connection
    REFUSED = "refused"  # the server refuses the gateway (authentication, no such database)

    @property
    def permanent(self) -> bool:
        """True when the running gateway cannot recover by itself: the file it
        holds open is no longer the one at the path, or its content is damaged."""
        return self in _PERMANENT


_PERMANENT = frozenset({StoreFault.DELETED, StoreFault.REPLACED, StoreFault.CORRUPT})


@dataclass(frozen=True, slots=True)
class StoreProblem:
    """A store fault and what was seen (for the log, ``/readyz`` and the API)."""

    fault: StoreFault
    detail: str

    def __str__(self) -> str:
        return f"{self.fault.value}: {self.detail}"


class StoreUnavailable(StoreError):
    """The store failed or is known to be failing: nothing was written."""

    def __init__(self, problem: StoreProblem) -> None:
        super().__init__(str(problem))
        self.problem = problem


class AssociationState(StrEnum):
    """The admin list's state column, derived from the last decision and the wipe."""

    ALLOWED = "allowed"
    BLOCKED = "blocked"
    QUARANTINED = "quarantined"  # a quarantine rule refuses it, no admin decided yet
    WIPE_PENDING = "wipe_pending"
    WIPED = "wiped"


def association_state(row: Association) -> AssociationState:
    """The list state of a row: wipe first, then the last decision; a refused
    row a quarantine rule matched, with no admin Allow/Block, is quarantined."""
    if row.wipe is WipeStatus.PENDING or row.wipe is WipeStatus.FAILED:
        return AssociationState.WIPE_PENDING
    if row.wipe is WipeStatus.WIPED:
        return AssociationState.WIPED
    if row.verdict is Verdict.FORWARD:
        return AssociationState.ALLOWED
    reasons = row.reasons
    if Reason.QUARANTINE in reasons and Reason.MANUAL not in reasons:
        return AssociationState.QUARANTINED
    return AssociationState.BLOCKED


@dataclass(frozen=True, slots=True)
class AssociationFilter:
    """Admin list filters; None means "any". All given filters must match."""

    user: str | None = None
    device_id: str | None = None
    device_type: str | None = None
    state: AssociationState | None = None
    reason: Reason | None = None
    linked: bool | None = None
    pool: str | None = None
    verified: bool | None = None
    throwaway: bool | None = None
    never_seen: bool | None = None  # pre-approved rows no device has used yet
    violation: str | None = None  # a violation kind the last decision recorded

    def matches(self, row: Association) -> bool:
        """Whether ``row`` passes every filter (the reference semantics)."""
        checks = (
            self.user is None or row.key.user == self.user,
            self.device_id is None or row.key.device_id == canonical_device_id(self.device_id),
            self.device_type is None or row.device_type == self.device_type,
            self.state is None or association_state(row) is self.state,
            self.reason is None or self.reason in row.reasons,
            self.linked is None or (row.device is not None) == self.linked,
            self.pool is None or row.pool == self.pool,
            self.verified is None or (row.verified_at is not None) == self.verified,
            self.throwaway is None or row.throwaway == self.throwaway,
            self.never_seen is None or row.never_seen == self.never_seen,
            self.violation is None or self.violation in row.violations,
        )
        return all(checks)


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Audit log filters; None means "any". ``actor`` is exact, ``target`` a
    case-insensitive part of the target (``DEVICE1`` finds ``association:DEVICE1/bob``),
    ``since`` inclusive and ``until`` exclusive (Unix seconds)."""

    actor: str | None = None
    target: str | None = None
    since: float | None = None
    until: float | None = None

    def matches(self, entry: AuditEntry) -> bool:
        """Whether ``entry`` passes every filter (the reference semantics)."""
        return (
            (self.actor is None or entry.actor == self.actor)
            and (self.target is None or self.target.casefold() in entry.target.casefold())
            and (self.since is None or entry.at >= self.since)
            and (self.until is None or entry.at < self.until)
        )


class Store(Protocol):
    """Persistence for the gateway's state. Lists are ordered by (user, device_id);
    the audit log newest first; a history oldest first."""

    async def load(self) -> Snapshot:
        """Everything, as a fresh ``Snapshot`` the caller owns."""
        ...

    async def apply(self, changes: Sequence[Change]) -> None:
        """Apply ``changes`` in order, in one transaction: all or nothing."""
        ...

    async def list_associations(
        self, filter: AssociationFilter | None = None, offset: int = 0, limit: int = 100
    ) -> tuple[list[Association], int]:
        """One page of the ActiveSync list and the total number of matching rows."""
        ...

    async def get_association(self, key: AssociationKey) -> Association | None:
        """One row, or None."""
        ...

    async def history(self, key: AssociationKey) -> list[HistoryEvent]:
        """What happened to one association (kept after Remove)."""
        ...

    async def audit(
        self, offset: int = 0, limit: int = 100, filter: AuditFilter | None = None
    ) -> tuple[list[AuditEntry], int]:
        """One page of the audit log (newest first, matching ``filter``) and the
        number of matching entries."""
        ...

    async def check(self, *, integrity: bool = False, probe: bool = False) -> StoreProblem | None:
        """What stops the store from keeping changes durably now, or None.

        Always cheap checks (is the file still the one opened, still writable);
        ``integrity`` adds a full integrity check, ``probe`` a small real write."""
        ...

    async def close(self) -> None:
        """Release resources; further calls are errors."""
        ...
