"""Routes of the directory users (local or LDAP entries).

Approach. Reads come from the in-memory snapshot. Each change is one pure
registry function of the policy (``upsert_user``), or, for deleting a user,
the ``DeleteUser`` change with its audit entry, built and applied through
``AdminContext.commit``; checks that depend on the current state run inside
the build, under the admin lock. A principal in a path may be written any
way the one rule accepts (bare, ``CORP\\bob``, a UPN, the user's email or
an alias): reads and deletes resolve it to the user; a PUT names the
principal itself (a known name of another user is a 409). The managed
devices' routes are ``sentry.admin.devices``.

Pushed mailboxes are checked when a write changes them
(``sentry.policy.pushcheck``). Registering a device or setting its labels
is refused when it would push a mailbox that cannot work (``devices``). A
user's attributes (custom fields, email) are the directory's data, often
synced from LDAP, and one user may be pushed to many devices: refusing would
leave the gateway's copy of the directory wrong and block the sync. So that
write is accepted and *flagged*: the answer lists every new problem
(``push_problems``), a ``push_problems`` warning is logged, the device view
shows them, and the affected mailboxes fail closed at their requests.
"""

from __future__ import annotations

from typing import Any

import structlog

from sentry.model import (
    User,
    UserSource,
    canonical_principal,
)
from sentry.policy import (
    Changes,
    DeleteUser,
    PushProblem,
    Snapshot,
    new_push_problems,
    registry,
)
from sentry.policy.audit import audited

from .errors import BadRequest, Conflict, NotFound
from .listing import PAGE_FIELDS, page_of
from .schema import BLANK, Call, Field, Route
from .views import key_view, user_view

__all__ = ["ROUTES"]

log = structlog.get_logger("sentry.admin")

_NOTE = Field("string", "why (kept in the audit log)")
_CUSTOM = {f"custom{i}": Field("string", f"$USER_CUSTOM{i}$", nullable=True) for i in range(1, 5)}
_USER_BODY = {
    "email": Field(
        "string",
        "the user's email address (or blank: none)",
        pattern=f"@|{BLANK}",
        mismatch="must be an email address",
    ),
    "display_name": Field("string"),
    "source": Field(
        "string", "where the entry comes from", choices=tuple(s.value for s in UserSource)
    ),
    **_CUSTOM,
    "aliases": Field("strings", "other names of the user (any spelling; canonicalised)"),
    "note": _NOTE,
}
_NOTE_BODY = {"note": _NOTE}


def _principal(call: Call, *, resolve: bool = True) -> str:
    """The path's principal under the realms; resolved through the aliases
    unless ``resolve`` is False (a PUT names the principal itself)."""
    snap, raw = call.ctx.snapshot, call.path["principal"]
    key = snap.canonical(raw) if resolve else canonical_principal(raw, snap.realms)
    if not key:
        if not resolve:  # a PUT names the principal to create
            raise BadRequest("not a user principal", {"principal": "names no account"})
        raise NotFound(f"no user: {raw!r} names no account")
    return key


async def _list_users(call: Call) -> dict[str, Any]:
    text = str(call.query.get("q", "")).strip().casefold()
    users = sorted(call.ctx.snapshot.users.values(), key=lambda u: u.principal)
    found = [u for u in users if not text or _user_matches(u, text)]
    return page_of(found, call, user_view)


def _user_matches(user: User, text: str) -> bool:
    return any(text in v.casefold() for v in (user.principal, user.email, user.display_name))


async def _get_user(call: Call) -> dict[str, Any]:
    principal, snap = _principal(call), call.ctx.snapshot
    user = snap.users.get(principal)
    if user is None:
        raise NotFound(f"no user {principal!r}")
    keys = sorted(row.key for row in snap.of_user(principal))
    return {
        **user_view(user),
        "devices": sorted(snap.devices_of(principal)),
        "associations": [key_view(k) for k in keys],
    }


def _user(principal: str, body: dict[str, Any]) -> User:
    email = str(body.get("email", "")).strip()  # checked by its field: blank or with an @
    customs = {name: (body.get(name) or "").strip() or None for name in _CUSTOM}
    return User(
        principal,
        email=email,
        display_name=str(body.get("display_name", "")).strip(),
        source=UserSource(body.get("source", "local")),
        custom1=customs["custom1"],
        custom2=customs["custom2"],
        custom3=customs["custom3"],
        custom4=customs["custom4"],
        aliases=frozenset(a.strip() for a in body.get("aliases", ()) if a.strip()),
    )


def _check_synced(call: Call, old: User | None, new: User | None) -> None:
    """While a directory is configured only its sync writes LDAP users (409):
    a hand edit would be lost at the next sync. ``source: local`` takes a user
    out of the sync (it is then never touched by it)."""
    if call.ctx.settings.directory.ldap is None:
        return
    if new is not None and new.source is UserSource.LDAP:
        raise Conflict(
            "LDAP users are written by the directory sync only: change the entry in the "
            "directory (or give source local to take the user out of the sync)"
        )
    if new is None and old is not None and old.source is UserSource.LDAP:
        raise Conflict(
            f"user {old.principal!r} comes from the directory: remove the entry there "
            "(the next sync applies the removal action)"
        )


async def _put_user(call: Call) -> dict[str, Any]:
    principal = _principal(call, resolve=False)
    user = _user(principal, dict(call.body))
    flagged: list[PushProblem] = []

    def build(snap: Snapshot, now: float) -> Changes:
        _check_synced(call, snap.users.get(principal), user)
        changes = registry.upsert_user(snap, user, actor=call.actor, now=now, note=call.note)
        flagged[:] = _flag(snap, changes, "put_user", principal)
        return changes

    await call.ctx.commit(build)
    view = user_view(call.ctx.snapshot.users[principal])
    return {**view, "push_problems": [p.view() for p in flagged]}


async def _delete_user(call: Call) -> dict[str, Any]:
    principal = _principal(call)
    flagged: list[PushProblem] = []

    def build(snap: Snapshot, now: float) -> Changes:
        old = snap.users.get(principal)
        if old is None:
            raise NotFound(f"no user {principal!r}")
        _check_synced(call, old, None)
        entry = audited(
            at=now,
            actor=call.actor,
            action="delete_user",
            target=f"user:{principal}",
            note=call.note,
            before=old,
            after=None,
        )
        changes = (DeleteUser(principal), entry)
        flagged[:] = _flag(snap, changes, "delete_user", principal)
        return changes

    ended = await call.ctx.commit(build)
    problems = [p.view() for p in flagged]
    return {"deleted": principal, "polls_ended": ended, "push_problems": problems}


def _flag(snap: Snapshot, changes: Changes, action: str, principal: str) -> list[PushProblem]:
    """The push problems a directory write introduces: accepted, but never silently."""
    found = new_push_problems(snap, changes)
    if found:
        log.warning(
            "push_problems", action=action, user=principal, problems=[p.view() for p in found]
        )
    return found


_USER_PATH = "/api/users/{principal}"
_LIST_USERS = {"q": Field("string", "a part of the principal, email or display name")}

ROUTES = (
    Route(
        "GET",
        "/api/users",
        _list_users,
        "Directory users",
        "users",
        query={**_LIST_USERS, **PAGE_FIELDS},
        response="UserPage",
    ),
    Route(
        "GET",
        _USER_PATH,
        _get_user,
        "One user, with devices and associations",
        "users",
        response="UserDetail",
    ),
    Route(
        "PUT",
        _USER_PATH,
        _put_user,
        "Create or replace a user",
        "users",
        body=_USER_BODY,
        response="UserChange",
        conflict=True,
        changes=True,
        description="Accepted even when the change makes a device's pushed mailbox unable to "
        "work (another backend type, one account too many on Android): those are listed in "
        "`push_problems` and logged, never refused (the directory's data wins). While a "
        "directory is configured (`directory.ldap`), 409 for `source: ldap`: only the sync "
        "writes LDAP users (`source: local` takes a user out of the sync).",
    ),
    Route(
        "DELETE",
        _USER_PATH,
        _delete_user,
        "Delete a user",
        "users",
        body=_NOTE_BODY,
        response="UserDeleted",
        conflict=True,
        changes=True,
        description="409 for an LDAP user while a directory is configured: remove the entry "
        "in the directory (the sync's removal action applies).",
    ),
)
