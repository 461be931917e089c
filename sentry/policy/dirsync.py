"""Plan one directory sync: the mapped entries against the snapshot -> ONE change list.

Approach. ``plan_sync`` is pure: it compares the users an LDAP search
described (``dirmap.Mapped``) with the snapshot's ``source: ldap`` users and
returns the changes (``PutUser``/``DeleteUser``, the re-keying of rows under
names that become a user's, the removal action's overrides) and a
``SyncOutcome`` (who was added, changed, removed; the entries it could not
use and why), closed by ONE audit entry. The shell applies the list through
the admin commit path, so a sync is one transaction, its revocations are
live, and its push problems are flagged like any directory write.

Rules:

- Local users (``source: local``) are never touched; an entry naming one is
  an error of that entry.
- An entry with a problem, or naming a principal an earlier entry (by DN)
  already named, is not used: the user keeps its last synced value and is
  not taken as removed.
- Names are checked on the result, not one entry at a time, so an alias
  moving from one user to another in the directory moves in one sync; an
  entry whose email, alias or principal would name another user is not
  applied (an error naming both) and the user keeps its last value. This is
  repeated until no new value conflicts (an entry reverted may make its old
  names conflict with another new value, which is then reverted too). Only
  the new values are checked, so a sync that changes little costs little.
- LDAP users the search no longer finds follow ``removed``: ``keep`` (left
  as they are), ``mark`` (flagged ``missing_since``), ``block`` (flagged,
  and every association of theirs blocked by ``DIRECTORY_ACTOR`` with the
  note ``REMOVED_NOTE``; those blocks are lifted when the user comes back
  and still carries them), ``delete`` (the user is deleted: their
  associations unlink). A sync that would remove more than
  ``max_removed_percent`` of the LDAP users (at least ``MIN_REMOVALS``), or
  that found no entry at all while LDAP users exist, is refused
  (``RemovalLimitError``) unless ``allow_mass_removal``: a wrong filter or
  a directory answering nothing must not take everyone's mail away.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sentry.model import AssociationKey, OverrideKind, User, UserSource

from . import admin
from .audit import audited
from .changes import AppendAudit, Change, Changes, DeleteUser, PutUser
from .dirmap import Mapped
from .errors import ConflictError, TransitionError
from .indexes import known_names
from .rekey import rekey_rows
from .snapshot import Snapshot

__all__ = [
    "DIRECTORY_ACTOR",
    "MIN_REMOVALS",
    "REMOVAL_ACTIONS",
    "REMOVED_NOTE",
    "SYNC_ERROR_KINDS",
    "RemovalLimitError",
    "SyncIssue",
    "SyncOutcome",
    "plan_sync",
]

DIRECTORY_ACTOR = "directory"
"""The actor of the overrides a sync places (and lifts)."""
REMOVED_NOTE = "removed from the directory"
"""The note of a block the ``block`` removal action placed."""
REMOVAL_ACTIONS = ("keep", "mark", "block", "delete")
SYNC_ERROR_KINDS = (
    "config", "connect", "timeout", "tls", "bind", "search", "removal_limit", "store",
)  # fmt: skip
"""Every kind of failed sync: reading the directory (config ... search), a
refused removal (``removal_limit``), the state store (``store``)."""
MIN_REMOVALS = 10
"""Removals up to this many are never refused by the percentage limit."""
LISTED = 200
"""At most this many principals per list in the audit entry (the counts are exact)."""


class RemovalLimitError(ConflictError):
    """The sync would remove more LDAP users than allowed (409); nothing changed."""


@dataclass(frozen=True, slots=True)
class SyncIssue:
    """An entry the sync could not use (or used in part): its DN, the principal
    when known, and the problem."""

    dn: str
    principal: str | None
    problem: str

    def view(self) -> dict[str, Any]:
        return {"dn": self.dn, "principal": self.principal, "problem": self.problem}


@dataclass(frozen=True)
class SyncOutcome:
    """What a sync changes (lists of principals, sorted) and what it could not use."""

    action: str
    entries: int
    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    returned: tuple[str, ...] = ()
    unchanged: int = 0
    missing: int = 0
    blocked: tuple[AssociationKey, ...] = ()
    errors: tuple[SyncIssue, ...] = ()
    warnings: tuple[SyncIssue, ...] = ()
    changes: Changes = field(default=(), repr=False)

    def summary(self) -> dict[str, Any]:
        """Counts and (capped) lists: the audit entry's ``after``."""
        return {
            "action": self.action,
            "entries": self.entries,
            "counts": {
                "added": len(self.added),
                "changed": len(self.changed),
                "removed": len(self.removed),
                "returned": len(self.returned),
                "unchanged": self.unchanged,
                "missing": self.missing,
                "blocked": len(self.blocked),
                "errors": len(self.errors),
                "warnings": len(self.warnings),
            },
            "added": list(self.added[:LISTED]),
            "changed": list(self.changed[:LISTED]),
            "removed": list(self.removed[:LISTED]),
            "errors": [e.view() for e in self.errors[:LISTED]],
        }


def plan_sync(
    snapshot: Snapshot,
    mapped: Sequence[Mapped],
    *,
    removed: str,
    max_removed_percent: float,
    allow_mass_removal: bool = False,
    actor: str,
    note: str,
    now: float,
) -> SyncOutcome:
    """The changes and the outcome of syncing ``mapped`` (see the module comment)."""
    ldap = {p: u for p, u in snapshot.users.items() if u.source is UserSource.LDAP}
    wanted, seen, errors = _candidates(snapshot, mapped)
    gone = sorted(set(ldap) - seen - wanted.keys())
    fresh_gone = [p for p in gone if ldap[p].missing_since is None]
    if removed != "keep":
        counts = (len(ldap), len(mapped), len(fresh_gone))
        _check_limit(*counts, max_removed_percent, allow_mass_removal)
    deleted = set(gone) if removed == "delete" else set()
    fresh = {p: u for p, u in wanted.items() if u != ldap.get(p)}  # added or changed
    applied = _resolve_names(snapshot, fresh, deleted, errors)
    dropped, fresh = fresh.keys() - applied.keys(), applied
    b = _Builder(snapshot, actor, now)
    added, changed, returned = b.users(ldap, fresh)
    unchanged = sum(1 for p in wanted if p in ldap and p not in fresh and p not in dropped)
    removals = fresh_gone if removed != "keep" else []
    b.removals(ldap, removals, removed)
    b.rekey(fresh)
    outcome = SyncOutcome(
        action=removed,
        entries=len(mapped),
        added=tuple(added),
        changed=tuple(changed),
        removed=tuple(removals),
        returned=tuple(returned),
        unchanged=unchanged,
        missing=len(gone),
        blocked=tuple(b.blocked),
        errors=tuple(errors),
        warnings=tuple(
            SyncIssue(m.dn, m.principal, w) for m in mapped for w in m.warnings if m.user
        ),
    )
    entry = audited(
        at=now,
        actor=actor,
        action="directory_sync",
        target="directory:ldap",
        note=note,
        before={"ldap_users": len(ldap)},
        after=outcome.summary(),
    )
    return replace(outcome, changes=(*b.changes, entry))


def _candidates(
    snapshot: Snapshot, mapped: Sequence[Mapped]
) -> tuple[dict[str, User], set[str], list[SyncIssue]]:
    """The users the entries describe (first DN wins), the principals seen
    (also those of unusable entries), and the entries' errors."""
    wanted: dict[str, User] = {}
    first_dn: dict[str, str] = {}
    seen: set[str] = set()
    errors: list[SyncIssue] = []
    for m in mapped:
        p = m.principal
        if p is not None:
            seen.add(p)
        if m.user is None or p is None:
            errors.append(SyncIssue(m.dn, p, m.problem or "not usable"))
            continue
        local = snapshot.users.get(p)
        if local is not None and local.source is not UserSource.LDAP:
            problem = "a local user has this principal: the sync never changes local users"
            errors.append(SyncIssue(m.dn, p, problem))
        elif p in first_dn:
            errors.append(SyncIssue(m.dn, p, f"{first_dn[p]!r} already names {p!r}"))
        else:
            wanted[p], first_dn[p] = m.user, m.dn
    return wanted, seen, errors


def _check_limit(
    ldap_users: int, entries: int, removals: int, percent: float, allowed: bool
) -> None:
    if allowed or removals == 0:
        return
    if entries == 0:
        raise RemovalLimitError(
            f"the directory returned no entry: the sync would remove all {ldap_users} LDAP "
            "users (check base_dn and filter; allow_mass_removal to proceed)"
        )
    limit = max(MIN_REMOVALS, int(ldap_users * percent / 100))
    if removals > limit:
        raise RemovalLimitError(
            f"the sync would remove {removals} of {ldap_users} LDAP users (more than "
            f"{percent:g}% and {MIN_REMOVALS}): nothing was changed (allow_mass_removal "
            "to proceed)"
        )


def _resolve_names(
    snapshot: Snapshot, fresh: Mapping[str, User], deleted: set[str], errors: list[SyncIssue]
) -> dict[str, User]:
    """``fresh`` (the new values: added or changed users) without those whose
    names conflict in the result.

    Only new values can conflict: every other user keeps names the snapshot
    already holds without conflict. A name a new value claims is taken when
    another new value claims it too, or when a user that keeps its value
    holds it (the snapshot's principals and alias index; a holder that is
    changing or deleted does not count). Cost: the new values, not the
    directory."""
    realms, fresh = snapshot.realms, dict(fresh)
    names = {p: known_names(u, realms) | {p} for p, u in fresh.items()}
    while True:
        claims: dict[str, list[str]] = {}
        for p, claimed in names.items():
            for name in claimed:
                claims.setdefault(name, []).append(p)
        taken: dict[str, tuple[str, set[str]]] = {}
        for name, who in claims.items():
            holder = _holder(snapshot, name, names, deleted)
            others = set(who) | ({holder} if holder is not None else set())
            if len(others) > 1:
                for p in who:
                    taken.setdefault(p, (name, others - {p}))
        if not taken:
            return fresh
        for p, (name, others) in sorted(taken.items()):
            problem = f"{name!r} would also name user {', '.join(sorted(others))}: not applied"
            errors.append(SyncIssue("", p, problem))
            del fresh[p], names[p]


def _holder(
    snapshot: Snapshot, name: str, changing: Mapping[str, object], deleted: set[str]
) -> str | None:
    """The user keeping its value that holds ``name`` (principal or known name)."""
    for owner in (name if name in snapshot.users else None, snapshot.alias_owner(name)):
        if owner is not None and owner not in changing and owner not in deleted:
            return owner
    return None


class _Builder:
    """Collects the change list of one sync."""

    def __init__(self, snapshot: Snapshot, actor: str, now: float) -> None:
        self.snap, self.actor, self.now = snapshot, actor, now
        self.changes: list[Change] = []
        self.blocked: list[AssociationKey] = []

    def users(
        self, ldap: Mapping[str, User], fresh: Mapping[str, User]
    ) -> tuple[list[str], list[str], list[str]]:
        """``PutUser`` for every new value: who was added, changed, returned."""
        added, changed, returned = [], [], []
        for p in sorted(fresh):
            old = ldap.get(p)
            if old is None:
                added.append(p)
            else:
                changed.append(p)
                if old.missing_since is not None:
                    returned.append(p)
                    self._lift(p)
            self.changes.append(PutUser(fresh[p]))
        return added, changed, returned

    def removals(self, ldap: Mapping[str, User], gone: Iterable[str], removed: str) -> None:
        for p in gone:
            if removed == "delete":
                self.changes.append(DeleteUser(p))
                continue
            self.changes.append(PutUser(replace(ldap[p], missing_since=self.now)))
            if removed == "block":
                self._block(p)

    def rekey(self, fresh: Mapping[str, User]) -> None:
        """Rows keyed under a name that becomes a user's join the user's rows."""
        mapping: dict[str, str] = {}
        for p, user in fresh.items():
            added = known_names(user, self.snap.realms) - self.snap.names_of(p)
            mapping |= {n: p for n in added if self.snap.device_count(n)}
        if mapping:
            why = "now known names of directory users: " + ", ".join(sorted(mapping)[:LISTED])
            self.changes += _no_audit(
                rekey_rows(self.snap, mapping, now=self.now, actor=self.actor, note=why)
            )

    def _block(self, principal: str) -> None:
        for row in sorted(self.snap.of_user(principal), key=lambda r: r.key):
            if row.override is not None and row.override.kind is not OverrideKind.ALLOW:
                continue  # blocked or wiped already
            try:
                changes = admin.block(
                    self.snap, row.key, note=REMOVED_NOTE, actor=DIRECTORY_ACTOR, now=self.now
                )
            except TransitionError:
                continue
            self.changes += _no_audit(changes)
            self.blocked.append(row.key)

    def _lift(self, principal: str) -> None:
        for row in sorted(self.snap.of_user(principal), key=lambda r: r.key):
            o = row.override
            if o is None or o.kind is not OverrideKind.BLOCK:
                continue
            if o.actor != DIRECTORY_ACTOR or o.note != REMOVED_NOTE:
                continue  # an administrator's block stays
            note = "back in the directory"
            changes = admin.reset(
                self.snap, row.key, note=note, actor=DIRECTORY_ACTOR, now=self.now
            )
            self.changes += _no_audit(changes)


def _no_audit(changes: Iterable[Change]) -> list[Change]:
    """The changes without their audit entries (the sync writes one of its own)."""
    return [c for c in changes if not isinstance(c, AppendAudit)]
