"""Routes of the directory: users (local or LDAP entries) and managed devices.

Approach. Reads come from the in-memory snapshot. Each change is one pure
registry function of the policy (``upsert_user``, ``register_device``,
``set_compliance``, ``retire_device``), or, for deleting a user, the
``DeleteUser`` change with its audit entry, built and applied through
``AdminContext.commit``: checks that depend on the current state (the device
id is free, its EAS DeviceIds belong to no other device, the labels exist)
run inside the build, under the admin lock. A compliance change reaches
every association of the device at once, held Pings included. A principal
in a path or an owner may be written any way the one rule accepts (bare,
``CORP\\bob``, a UPN, the user's email or an alias): reads and deletes
resolve it to the user; a PUT names the principal itself (a known name of
another user is a 409).

Pushed mailboxes are checked when a write changes them
(``sentry.policy.pushcheck``). Registering a device or setting its labels
is refused (409, each device and setting named) when it would push a mailbox
of another backend type or one Exchange account too many to an Android
device: the administrator chose that device's labels now. A user's
attributes (custom fields, email) are the directory's data, often synced
from LDAP, and one user may be pushed to many devices: refusing would leave
the gateway's copy of the directory wrong and block the sync. So that write
is accepted and *flagged*: the answer lists every new problem
(``push_problems``), a ``push_problems`` warning is logged, the device view
shows them, and the affected mailboxes fail closed at their requests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import structlog

from sentry.compliance import MAX_VIOLATION_DETAIL
from sentry.model import (
    Device,
    Platform,
    User,
    UserSource,
    Violation,
    ViolationKind,
    canonical_device_id,
    canonical_principal,
)
from sentry.policy import (
    Changes,
    DeleteUser,
    PushProblem,
    Snapshot,
    check_pushes,
    new_push_problems,
    push_problems,
    registry,
)
from sentry.policy.audit import audited

from .context import Build
from .errors import BadRequest, Conflict, NotFound
from .listing import PAGE_FIELDS
from .membership import labels_of, membership_changes, replace_pairs
from .schema import ADD_OR_REMOVE, BLANK, Call, Field, Route
from .views import association_item, device_view, key_view, user_view

__all__ = ["ROUTES"]

T = TypeVar("T")
log = structlog.get_logger("sentry.admin")

_NOTE = Field("string", "why (kept in the audit log)")
_KINDS = tuple(k.value for k in ViolationKind)
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
_REGISTER_BODY = {
    "id": Field("string", "the managed device id", required=True, blank=False),
    "owner": Field("string", "the owner's principal", required=True, blank=False),
    "platform": Field("string", choices=tuple(p.value for p in Platform)),
    "eas_device_ids": Field("strings", "the EAS DeviceIds of the device"),
    "labels": Field("strings", "labels carried by the device"),
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


def _page(found: list[T], call: Call, view: Callable[[T], dict[str, Any]]) -> dict[str, Any]:
    """One page of ``found`` (only the page's items are rendered)."""
    offset, limit = call.query.get("offset", 0), call.query.get("limit", 100)
    items = [view(x) for x in found[offset : offset + limit]]
    return {"items": items, "total": len(found), "offset": offset, "limit": limit}


# --- Users ---


async def _list_users(call: Call) -> dict[str, Any]:
    text = str(call.query.get("q", "")).strip().casefold()
    users = sorted(call.ctx.snapshot.users.values(), key=lambda u: u.principal)
    found = [u for u in users if not text or _user_matches(u, text)]
    return _page(found, call, user_view)


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


# --- Devices ---


def _device(snap: Snapshot, device_id: str) -> Device:
    device = snap.devices.get(device_id)
    if device is None:
        raise NotFound(f"no managed device {device_id!r}")
    return device


def _check_labels(snap: Snapshot, labels: frozenset[str]) -> None:
    unknown = sorted(labels - snap.labels.keys())
    if unknown:
        raise Conflict("unknown labels", {"labels": f"no such label: {', '.join(unknown)}"})


def _check_new_device(snap: Snapshot, device: Device) -> None:
    if device.id in snap.devices:
        raise Conflict(f"managed device {device.id!r} is already registered")
    for eas_id in sorted(device.eas_ids):
        holder = snap.device_for_eas(eas_id)
        if holder is not None:
            raise Conflict(f"EAS DeviceId {eas_id} already belongs to device {holder.id!r}")
    _check_labels(snap, device.labels)


async def _list_devices(call: Call) -> dict[str, Any]:
    snap, owner = call.ctx.snapshot, call.query.get("owner")
    devices = sorted(snap.devices.values(), key=lambda d: d.id)
    if owner:
        key = snap.canonical(owner)
        devices = [d for d in devices if d.owner == key]
    return _page(devices, call, lambda d: device_view(d, snap))


async def _register_device(call: Call) -> dict[str, Any]:
    body = call.body
    device = Device(
        id=body["id"].strip(),
        owner=body["owner"],
        platform=Platform(body.get("platform", "other")),
        eas_ids=frozenset(canonical_device_id(i) for i in body.get("eas_device_ids", ())),
        labels=frozenset(body.get("labels", ())),
    )

    def build(snap: Snapshot, now: float) -> Changes:
        _check_new_device(snap, device)
        changes = registry.register_device(snap, device, actor=call.actor, now=now, note=call.note)
        check_pushes(snap, changes)
        return changes

    return await _device_change(call, device.id, build)


async def _device_change(call: Call, device_id: str, build: Build) -> dict[str, Any]:
    ended = await call.ctx.commit(build)
    snap = call.ctx.snapshot
    return {"device": device_view(snap.devices[device_id], snap), "polls_ended": ended}


async def _get_device(call: Call) -> dict[str, Any]:
    snap = call.ctx.snapshot
    device = _device(snap, call.path["id"])
    pushed = snap.pushed(device.id)
    keys = set(snap.manually_linked(device.id))
    for eas_id in device.eas_ids:
        keys.update(row.key for row in snap.on_device(eas_id))
    rows = [r for r in (snap.get(k) for k in sorted(keys)) if r is not None]
    return {
        **device_view(device, snap),
        "pushed": [
            {"setting": m.setting, "user_name": m.user_name, "email": m.email}
            | {"principal": m.principal}
            for m in pushed.mailboxes
        ],
        "push_errors": list(pushed.errors),
        "push_problems": [p.view() for p in push_problems(snap, [device.id])],
        "associations": [association_item(r) for r in rows],
    }


def _violations(body: Mapping[str, Any]) -> frozenset[Violation]:
    """The body's violations: each kind listed or given a detail, once (checked
    against the vocabulary by the fields)."""
    details = {k: str(v).strip() for k, v in (body.get("details") or {}).items()}
    kinds = {v.strip() for v in body["violations"]} | details.keys()
    return frozenset(Violation(ViolationKind(k), details.get(k, "")) for k in kinds)


async def _set_compliance(call: Call) -> dict[str, Any]:
    device_id, violations = call.path["id"], _violations(call.body)
    return await _device_change(
        call,
        device_id,
        lambda snap, now: registry.set_compliance(
            snap, device_id, violations, actor=call.actor, now=now, note=call.note
        ),
    )


async def _retire_device(call: Call) -> dict[str, Any]:
    device_id = call.path["id"]
    return await _device_change(
        call,
        device_id,
        lambda snap, now: registry.retire_device(
            snap, device_id, actor=call.actor, now=now, note=call.note
        ),
    )


async def _set_device_labels(call: Call) -> dict[str, Any]:
    device_id, labels = call.path["id"], frozenset(v.strip() for v in call.body["labels"])

    def build(snap: Snapshot, now: float) -> Changes:
        _device(snap, device_id)
        _check_labels(snap, labels)
        current = {(name, device_id) for name in labels_of(snap, device_id)}
        add, remove = replace_pairs(current, {(name, device_id) for name in labels})
        changes = membership_changes(snap, add, remove, actor=call.actor, now=now, note=call.note)
        check_pushes(snap, changes)
        return changes

    return await _device_change(call, device_id, build)


async def _move_device_labels(call: Call) -> dict[str, Any]:
    device_id = call.path["id"]
    add = frozenset(v.strip() for v in call.body.get("add", ()))
    remove = frozenset(v.strip() for v in call.body.get("remove", ()))
    if add & remove:
        raise BadRequest("invalid membership", {"remove": "also in add"})

    def build(snap: Snapshot, now: float) -> Changes:
        _device(snap, device_id)
        if not add and not remove:
            raise BadRequest("nothing to change", {"add": "give labels to add or remove"})
        _check_labels(snap, add | remove)
        pairs = {(name, device_id) for name in add}, {(name, device_id) for name in remove}
        changes = membership_changes(snap, *pairs, actor=call.actor, now=now, note=call.note)
        check_pushes(snap, changes)
        return changes

    return await _device_change(call, device_id, build)


_USER_PATH, _DEVICE_PATH = "/api/users/{principal}", "/api/devices/{id}"
_LIST_USERS = {"q": Field("string", "a part of the principal, email or display name")}
_LIST_DEVICES = {"owner": Field("string", "only devices of this owner")}

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
    Route(
        "GET",
        "/api/devices",
        _list_devices,
        "Managed devices",
        "devices",
        query={**_LIST_DEVICES, **PAGE_FIELDS},
        response="DevicePage",
    ),
    Route(
        "POST",
        "/api/devices",
        _register_device,
        "Register a managed device",
        "devices",
        body=_REGISTER_BODY,
        status=201,
        response="DeviceChange",
        conflict=True,
        changes=True,
        description="409 when the id or one of its EAS DeviceIds is taken, a label does not "
        "exist, or (with `problems`) when its labels would push a mailbox of another backend "
        "type or one Exchange account too many to an Android device.",
    ),
    Route(
        "GET",
        _DEVICE_PATH,
        _get_device,
        "One device: pushed accounts (templates resolved, with errors), associations",
        "devices",
        response="DeviceDetail",
    ),
    Route(
        "PUT",
        _DEVICE_PATH + "/compliance",
        _set_compliance,
        "Set compliance: the violations, [] for compliant",
        "devices",
        body={
            "violations": Field(
                "strings",
                "the kinds of violation ([] and no details: compliant)",
                required=True,
                choices=_KINDS,
            ),
            "details": Field(
                "object",
                "free text per kind (a kind given here counts as listed)",
                fields={k: Field("string", max_length=MAX_VIOLATION_DETAIL) for k in _KINDS},
            ),
            "note": _NOTE,
        },
        response="DeviceChange",
        changes=True,
        description="The violations are a vocabulary (what EPMM and Workspace ONE report): "
        + ", ".join(f"`{k}`" for k in _KINDS)
        + "; anything else is a 400. `other` with a detail keeps what fits none of them.",
    ),
    Route(
        "POST",
        _DEVICE_PATH + "/retire",
        _retire_device,
        "Retire a device: its DeviceIds stop counting as registered",
        "devices",
        body=_NOTE_BODY,
        response="DeviceChange",
        changes=True,
    ),
    Route(
        "PUT",
        _DEVICE_PATH + "/labels",
        _set_device_labels,
        "Set exactly the labels a device is in",
        "devices",
        body={"labels": Field("strings", "label names", required=True), "note": _NOTE},
        response="DeviceChange",
        conflict=True,
        changes=True,
        description="409 naming the labels that do not exist, or with `problems` when the "
        "labels would push a mailbox of another backend type or one Exchange account too many "
        "to an Android device.",
    ),
    Route(
        "POST",
        _DEVICE_PATH + "/labels",
        _move_device_labels,
        "Put a device in labels or take it out",
        "devices",
        body={
            "add": Field("strings", "labels to put the device in"),
            "remove": Field("strings", "labels to take the device out of"),
            "note": _NOTE,
        },
        body_rules=ADD_OR_REMOVE,
        response="DeviceChange",
        conflict=True,
        changes=True,
        description="409 naming the labels that do not exist, or with `problems` when the "
        "labels would push a mailbox of another backend type or one Exchange account too many "
        "to an Android device.",
    ),
)
