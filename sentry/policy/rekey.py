"""Re-keying associations when the meaning of a name changes.

Approach. A row's key holds the canonical principal, so the key moves when
what a name means moves:

- the configured realms change (``realm_changes``, run at start against the
  loaded snapshot: every stored principal is canonicalised again, users and
  device owners too, and the realms are recorded);
- a user gains a known name (email, alias) under which rows already exist
  (``rekey_rows``, called by ``registry.upsert_user``): those rows join the
  user's, so a block on one spelling is not bypassed by the other.

Rows that collapse into one key are MERGED (``merge_rows``): the most
restrictive admin state wins (wiped > wipe pending > Block > Allow > none,
with its note), first seen is the earliest, last seen and the descriptive
fields the latest, verified the earliest verification; the histories are
moved under the new key (``MoveHistory``) and a ``rekeyed`` event and an
audit entry say what was merged. Two directory users that would collapse
into one principal, or one name that would name two users, are not merged
silently: ``ConflictError`` names them (at start it stops the gateway with
the message).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from sentry.model import (
    Association,
    AssociationKey,
    HistoryEvent,
    OverrideKind,
    Realms,
    WipeStatus,
    canonical_principal,
)

from .audit import audited
from .changes import (
    AppendHistory,
    Change,
    Changes,
    DeleteAssociation,
    DeleteUser,
    MoveHistory,
    PutAssociation,
    PutDevice,
    PutEstablished,
    PutRealms,
    PutUser,
)
from .errors import ConflictError
from .indexes import known_names
from .snapshot import Snapshot

__all__ = ["merge_rows", "realm_changes", "rekey_rows"]

SYSTEM = "system"
"""The actor of changes the gateway makes itself (re-keying at start)."""


def merge_rows(rows: Sequence[Association], key: AssociationKey) -> Association:
    """One row under ``key`` standing for ``rows`` (see the module comment)."""
    strict = max(rows, key=_restrictiveness)
    latest = max(rows, key=lambda r: (r.last_seen, r.key.user))
    verified = [r.verified_at for r in rows if r.verified_at is not None]
    link = strict.manual_link or next((r.manual_link for r in rows if r.manual_link), None)
    return replace(
        strict,
        key=key,
        device_type=latest.device_type,
        user_agent=latest.user_agent,
        protocol_version=latest.protocol_version,
        device_info=latest.device_info or strict.device_info,
        first_seen=min(r.first_seen for r in rows),
        last_seen=latest.last_seen,
        manual_link=link,
        policy_fingerprint=latest.policy_fingerprint,
        ambiguous_policy=any(r.ambiguous_policy for r in rows),
        verified_at=min(verified) if verified else None,
    )


_OVERRIDE_RANK = {None: 0, OverrideKind.ALLOW: 1, OverrideKind.BLOCK: 2, OverrideKind.WIPE: 3}
_WIPE_RANK = {WipeStatus.NONE: 0, WipeStatus.FAILED: 4, WipeStatus.PENDING: 4, WipeStatus.WIPED: 5}


def _restrictiveness(row: Association) -> tuple[int, float]:
    kind = None if row.override is None else row.override.kind
    rank = max(_OVERRIDE_RANK[kind], _WIPE_RANK[row.wipe])
    return rank, -row.first_seen  # a tie: the oldest row


def rekey_rows(
    snapshot: Snapshot,
    mapping: Mapping[str, str],
    *,
    now: float,
    actor: str,
    note: str,
) -> Changes:
    """Move every row of each old principal in ``mapping`` to the new one,
    merging rows that meet under one key (``snapshot`` still has the old keys)."""
    groups: dict[AssociationKey, list[Association]] = {}
    for old_user, new_user in sorted(mapping.items()):
        if old_user == new_user:
            continue
        for row in snapshot.of_user(old_user):
            new_key = AssociationKey(row.key.device_id, new_user)
            groups.setdefault(new_key, []).append(row)
    out: list[Change] = []
    for new_key, moved in sorted(groups.items()):
        leaving = mapping.get(new_key.user, new_key.user) != new_key.user
        kept = None if leaving else snapshot.get(new_key)
        out += _merge_group(new_key, moved, kept, now=now, actor=actor, note=note)
    out += _rekey_established(snapshot, groups)
    return tuple(out)


def _merge_group(
    key: AssociationKey,
    moved: list[Association],
    kept: Association | None,
    *,
    now: float,
    actor: str,
    note: str,
) -> list[Change]:
    rows = [*moved, *([] if kept is None else [kept])]
    merged = merge_rows(rows, key)
    out: list[Change] = []
    for row in moved:
        out += [DeleteAssociation(row.key), MoveHistory(row.key, key)]
    out.append(PutAssociation(merged))
    sources = sorted(f"{r.key.device_id}/{r.key.user}" for r in moved)
    detail = {"from": sources, "merged": len(rows) > 1, "note": note}
    out.append(AppendHistory(key, HistoryEvent(now, "rekeyed", detail)))
    out.append(
        audited(
            at=now,
            actor=actor,
            action="rekey_association",
            target=f"association:{key.device_id}/{key.user}",
            note=note,
            before={"keys": sources, "kept": None if kept is None else key.user},
            after={"key": f"{key.device_id}/{key.user}", "merged": len(rows)},
        )
    )
    return out


def _rekey_established(
    snapshot: Snapshot, groups: Mapping[AssociationKey, list[Association]]
) -> list[Change]:
    """Established types name the association that set them: follow it."""
    new_of = {row.key: key for key, rows in groups.items() for row in rows}
    return [
        PutEstablished(replace(e, key=new_of[e.key]))
        for e in snapshot.established_types()
        if e.key is not None and e.key in new_of
    ]


def realm_changes(snapshot: Snapshot, realms: Realms, now: float) -> Changes:
    """Everything needed to make a snapshot canonical under ``realms`` (the
    configuration) when it was made under other realms (nothing otherwise).

    ``ConflictError`` when two users would become one principal, a user's
    principal names nothing under the new realms, or a name would name two users.
    """
    if snapshot.realms == realms:
        return ()
    out: list[Change] = [PutRealms(realms), *_user_changes(snapshot, realms)]
    scratch = snapshot.copy()
    scratch.apply(out)  # the users re-keyed and the alias index under the new realms
    _check_names(scratch)
    out += _owner_changes(snapshot, scratch)
    principals = {row.key.user for row in snapshot.associations()}
    mapping = {p: _new_principal(scratch, p) for p in principals}
    note = "the configured realms changed"
    out += rekey_rows(scratch, mapping, now=now, actor=SYSTEM, note=note)
    return tuple(out)


def _new_principal(scratch: Snapshot, principal: str) -> str:
    """The principal a stored one stands for now (unchanged if it names nothing)."""
    return scratch.canonical(principal) or principal


def _user_changes(snapshot: Snapshot, realms: Realms) -> list[Change]:
    out: list[Change] = []
    taken: dict[str, str] = {}
    for principal, user in sorted(snapshot.users.items()):
        new = canonical_principal(principal, realms)
        if new is None:
            raise ConflictError(f"user {principal!r} names no principal under the realms")
        if new in taken:
            raise ConflictError(
                f"users {taken[new]!r} and {principal!r} would both be {new!r} under the "
                "configured realms: delete or rename one first"
            )
        taken[new] = principal
        if new != principal:
            out += [DeleteUser(principal), PutUser(replace(user, principal=new))]
    return out


def _check_names(scratch: Snapshot) -> None:
    """No known name of a user may be another user or another user's name."""
    owners: dict[str, str] = {}
    for principal, user in sorted(scratch.users.items()):
        for name in sorted(known_names(user, scratch.realms)):
            other = owners.setdefault(name, principal)
            if other != principal or (name in scratch.users and name != principal):
                holder = other if other != principal else name
                raise ConflictError(
                    f"{name!r} would name both {holder!r} and {principal!r} under the "
                    "configured realms: change one user's email or aliases first"
                )


def _owner_changes(snapshot: Snapshot, scratch: Snapshot) -> Iterable[Change]:
    for device in sorted(snapshot.devices.values(), key=lambda d: d.id):
        owner = scratch.canonical(device.owner) or device.owner
        if owner != device.owner:
            yield PutDevice(replace(device, owner=owner))
