"""Pushed mailboxes checked when they are pushed, not at the first refusal.

Approach. A configuration write (a label's settings or devices, an Exchange
setting, a device's labels, owner or platform, a user's attributes) changes
what is pushed to some devices. ``new_push_problems(snapshot, changes)``
resolves the pushes of exactly those devices twice, before and after the
changes (``templates.resolve_pushed_mailboxes`` over a view of the registry
with the changes laid on top; the snapshot itself is not touched), and
returns the problems the changes would introduce:

- ``MIXED_BACKEND``: a pushed mailbox routes to a backend type other than the
  device's: its established type (recorded on the device, or on one of its
  EAS DeviceIds before registration: the oldest), else its owner's mailbox
  type. At the device's first request that mailbox would be refused
  (design.md §4 row 3). Mailboxes are named and routed by the one principal
  rule (``Snapshot.canonical``, ``Snapshot.pool_for``);
- ``ANDROID_LIMIT``: an Android device would be pushed more Exchange
  accounts than it holds (two, the owner's own included); the setting that
  does not fit is named, after the priorities.

Problems a device already had are not new: an unrelated write is never
refused for them. The shell decides what to do with new ones (the admin API
refuses registry writes with 409 and flags directory writes, see
``admin/push.py`` and ``admin/directory.py``). ``push_problems`` lists the
current problems of some devices (the device view).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sentry.model import Device, ExchangeSetting, Label, User

from . import changes as ch
from .errors import PushConflictError
from .indexes import DEVICE_SCOPE, EAS_SCOPE
from .snapshot import Snapshot
from .templates import ANDROID_MAX_SETTINGS, PushedMailbox, resolve_pushed_mailboxes

__all__ = [
    "PushProblem",
    "PushProblemKind",
    "check_pushes",
    "new_push_problems",
    "push_problems",
]


class PushProblemKind(StrEnum):
    MIXED_BACKEND = "MIXED_BACKEND"  # a pushed mailbox of another backend type
    ANDROID_LIMIT = "ANDROID_LIMIT"  # more Exchange accounts than an Android device holds


@dataclass(frozen=True, slots=True, order=True)
class PushProblem:
    """One pushed mailbox that cannot work on one device, and why."""

    device: str
    setting: str
    kind: PushProblemKind
    message: str

    def view(self) -> dict[str, Any]:
        """JSON-ready (the admin API's ``problems``)."""
        return {
            "device": self.device,
            "setting": self.setting,
            "reason": self.kind.value,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class _Registry:
    """The registry values a push depends on (the snapshot's, or with changes on top)."""

    users: Mapping[str, User]
    devices: Mapping[str, Device]
    labels: Mapping[str, Label]
    settings: Mapping[str, ExchangeSetting]

    @classmethod
    def of(cls, snap: Snapshot) -> _Registry:
        return cls(snap.users, snap.devices, snap.labels, snap.settings)


def push_problems(snapshot: Snapshot, device_ids: Iterable[str]) -> list[PushProblem]:
    """The problems the current pushes of these devices have, sorted."""
    reg = _Registry.of(snapshot)
    return sorted(_problems(snapshot, reg, device_ids))


def new_push_problems(snapshot: Snapshot, changes: Iterable[ch.Change]) -> list[PushProblem]:
    """The problems ``changes`` would introduce (call before applying them)."""
    changes = tuple(changes)
    before = _Registry.of(snapshot)
    after = _after(before, changes)
    devices = _touched(snapshot, before, after, changes)
    if not devices:
        return []
    old = _problems(snapshot, before, devices)
    return sorted(_problems(snapshot, after, devices) - old)


def check_pushes(snapshot: Snapshot, changes: Iterable[ch.Change]) -> None:
    """Refuse ``changes`` (``PushConflictError``, 409) if they introduce a problem."""
    found = new_push_problems(snapshot, changes)
    if found:
        first = found[0].message + (f" (and {len(found) - 1} more)" if len(found) > 1 else "")
        raise PushConflictError(f"this change would push what cannot work: {first}", found)


# --- Resolving one device -------------------------------------------------------------


def _problems(snap: Snapshot, reg: _Registry, device_ids: Iterable[str]) -> set[PushProblem]:
    out: set[PushProblem] = set()
    for device_id in device_ids:
        device = reg.devices.get(device_id)
        if device is not None and not device.retired:
            out |= _device_problems(snap, reg, device)
    return out


def _device_problems(snap: Snapshot, reg: _Registry, device: Device) -> set[PushProblem]:
    owner = reg.users.get(device.owner)
    pushed = resolve_pushed_mailboxes(
        device, owner, reg.labels.values(), reg.settings, snap.canonical
    )
    out = {
        PushProblem(
            device.id,
            name,
            PushProblemKind.ANDROID_LIMIT,
            f"device {device.id!r}: Exchange setting {name!r} would be one Exchange account "
            f"too many (an Android device holds {ANDROID_MAX_SETTINGS}, its owner's included)",
        )
        for name in pushed.capped
    }
    expected = _device_type(snap, reg, device)
    if expected is None:
        return out
    for mailbox in pushed.mailboxes:
        kind = _mailbox_type(snap, reg, mailbox.principal)
        if kind is not None and kind != expected:
            out.add(_mixed(device, mailbox, kind, expected))
    return out


def _mixed(device: Device, mailbox: PushedMailbox, kind: str, expected: str) -> PushProblem:
    message = (
        f"device {device.id!r}: Exchange setting {mailbox.setting!r} would push mailbox "
        f"{mailbox.principal!r} (backend type {kind}) to a device of backend type {expected}"
    )
    return PushProblem(device.id, mailbox.setting, PushProblemKind.MIXED_BACKEND, message)


def _mailbox_type(snap: Snapshot, reg: _Registry, principal: str) -> str | None:
    """The backend type routing gives a mailbox (``Snapshot.pool_for`` over ``reg``'s users)."""
    pool = snap.pool_for(principal, reg.users)
    return None if pool is None else pool.type


def _device_type(snap: Snapshot, reg: _Registry, device: Device) -> str | None:
    """The device's backend type: its established type (the device's record,
    else the oldest of its DeviceIds' records, which registering folds into
    one), else its owner's mailbox type; None when neither is known."""
    record = snap.established(DEVICE_SCOPE + device.id)
    if record is None:
        found = [e for i in device.eas_ids if (e := snap.established(EAS_SCOPE + i))]
        record = min(found, key=lambda e: (e.at, e.scope), default=None)
    if record is not None:
        return record.backend_type
    return _mailbox_type(snap, reg, device.owner)


# --- The registry after the changes, and the devices they touch -----------------------


def _after(before: _Registry, changes: tuple[ch.Change, ...]) -> _Registry:
    users, devices = dict(before.users), None
    labels, settings = dict(before.labels), dict(before.settings)
    for c in changes:
        if isinstance(c, ch.PutUser):
            users[c.user.principal] = c.user
        elif isinstance(c, ch.DeleteUser):
            users.pop(c.principal, None)
        elif isinstance(c, ch.PutDevice | ch.DeleteDevice):
            devices = dict(before.devices) if devices is None else devices
            if isinstance(c, ch.PutDevice):
                devices[c.device.id] = c.device
            else:
                devices.pop(c.device_id, None)
        elif isinstance(c, ch.PutLabel):
            labels[c.label.name] = c.label
        elif isinstance(c, ch.DeleteLabel):
            labels.pop(c.name, None)
        elif isinstance(c, ch.PutSetting):
            settings[c.setting.name] = c.setting
        elif isinstance(c, ch.DeleteSetting):
            settings.pop(c.name, None)
    return _Registry(users, before.devices if devices is None else devices, labels, settings)


def _touched(
    snap: Snapshot, before: _Registry, after: _Registry, changes: tuple[ch.Change, ...]
) -> set[str]:
    """The devices whose pushes the changes may alter."""
    out: set[str] = set()
    labels: set[str] = set()
    users: set[str] = set()
    for c in changes:
        if isinstance(c, ch.PutDevice):
            out.add(c.device.id)
        elif isinstance(c, ch.PutLabel):
            labels.add(c.label.name)
        elif isinstance(c, ch.DeleteLabel):
            labels.add(c.name)
        elif isinstance(c, ch.PutSetting):
            labels |= _applying(before, c.setting.name) | _applying(after, c.setting.name)
        elif isinstance(c, ch.DeleteSetting):
            labels |= _applying(before, c.name) | _applying(after, c.name)
        elif isinstance(c, ch.PutUser):
            users.add(c.user.principal)
        elif isinstance(c, ch.DeleteUser):
            users.add(c.principal)
    if users:
        out |= _user_devices(snap, before, users)
    if labels:
        out |= _carrying(before, labels) | _carrying(after, labels)
    return out


def _applying(reg: _Registry, setting: str) -> set[str]:
    """The labels that apply an Exchange setting."""
    return {lb.name for lb in reg.labels.values() if setting in lb.settings}


def _carrying(reg: _Registry, labels: set[str]) -> set[str]:
    listed = {d for name in labels if (lb := reg.labels.get(name)) for d in lb.devices}
    return listed | {d.id for d in reg.devices.values() if d.labels & labels}


def _user_devices(snap: Snapshot, reg: _Registry, principals: set[str]) -> set[str]:
    """Devices the users own (templates read the owner) or are pushed to (routing
    reads the user's email). The labelled devices' pushes are read once for all
    the users (a directory sync changes thousands in one list)."""
    out: set[str] = set()
    for principal in principals:
        out |= snap.devices_of(principal)
    for device_id in _carrying(reg, set(reg.labels)):
        if not principals.isdisjoint(snap.pushed(device_id).principals):
            out.add(device_id)
    return out
