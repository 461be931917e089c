"""Routes of the managed devices: registration, compliance, retirement, labels.

Approach. Reads come from the in-memory snapshot. Each change is one pure
registry function of the policy (``register_device``, ``set_compliance``,
``retire_device``) or a label membership change, built and applied through
``AdminContext.commit``: checks that depend on the current state (the device
id is free, its EAS DeviceIds belong to no other device, the labels exist)
run inside the build, under the admin lock. A compliance change reaches
every association of the device at once, held Pings included. The list's
``owner`` filter may be written any way the one principal rule accepts
(bare, ``CORP\\bob``, a UPN, the user's email or an alias).

Pushed mailboxes are checked when a write changes them
(``sentry.policy.pushcheck``). Registering a device or setting its labels
is refused (409, each device and setting named) when it would push a mailbox
of another backend type or one Exchange account too many to an Android
device: the administrator chose that device's labels now. (A user's
attributes are accepted and flagged instead: ``sentry.admin.directory``.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sentry.compliance import MAX_VIOLATION_DETAIL
from sentry.model import (
    Device,
    Platform,
    Violation,
    ViolationKind,
    canonical_device_id,
)
from sentry.policy import Changes, Snapshot, check_pushes, push_problems, registry

from .context import Build
from .errors import BadRequest, Conflict, NotFound
from .listing import PAGE_FIELDS, page_of
from .membership import labels_of, membership_changes, replace_pairs
from .schema import ADD_OR_REMOVE, Call, Field, Route
from .views import association_item, device_view

__all__ = ["ROUTES"]

_NOTE = Field("string", "why (kept in the audit log)")
_KINDS = tuple(k.value for k in ViolationKind)
_REGISTER_BODY = {
    "id": Field("string", "the managed device id", required=True, blank=False),
    "owner": Field("string", "the owner's principal", required=True, blank=False),
    "platform": Field("string", choices=tuple(p.value for p in Platform)),
    "eas_device_ids": Field("strings", "the EAS DeviceIds of the device"),
    "labels": Field("strings", "labels carried by the device"),
    "note": _NOTE,
}


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
    return page_of(devices, call, lambda d: device_view(d, snap))


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


_DEVICE_PATH = "/api/devices/{id}"
_LIST_DEVICES = {"owner": Field("string", "only devices of this owner")}
_NOTE_BODY = {"note": _NOTE}

ROUTES = (
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
