"""Which devices are in which labels: one membership, however it was recorded.

Approach. A device is in a label when the label lists it (``Label.devices``)
or the device carries the label (``Device.labels``): both are how EPMM-style
data arrives, and the push resolution already takes their union. The admin
API shows that union, and only that, on both sides: ``labels`` of a device
and ``devices`` of a label are the same pairs.

Changes are explicit pairs. ``membership_changes`` takes the (label, device)
pairs to add and to remove: an added pair is recorded on the label (unless it
already holds), a removed pair is taken off BOTH records so that it really
ends. Every object it touches gets one ``put_label``/``register_device``
change with its audit entry, in the caller's one transaction. Nothing ever
replaces a membership wholesale unless the caller computed the pairs to
remove (``replace_pairs``), which is how the "set exactly these" routes work.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from sentry.model import Label
from sentry.policy import Change, Changes, Snapshot, registry

from .errors import Conflict, NotFound

__all__ = ["Pair", "labels_of", "members_of", "membership_changes", "replace_pairs"]

Pair = tuple[str, str]
"""(label name, managed device id)."""


def labels_of(snapshot: Snapshot, device_id: str) -> frozenset[str]:
    """The labels a device is in."""
    device = snapshot.devices.get(device_id)
    carried = device.labels if device is not None else frozenset()
    listed = {lb.name for lb in snapshot.labels.values() if device_id in lb.devices}
    return frozenset(carried | listed)


def members_of(snapshot: Snapshot, label: str) -> frozenset[str]:
    """The devices in a label."""
    found = snapshot.labels.get(label)
    listed = found.devices if found is not None else frozenset()
    carrying = {d.id for d in snapshot.devices.values() if label in d.labels}
    return frozenset(listed | carrying)


def replace_pairs(current: Iterable[Pair], wanted: Iterable[Pair]) -> tuple[set[Pair], set[Pair]]:
    """(add, remove) that turn the ``current`` pairs into exactly ``wanted``."""
    have, want = set(current), set(wanted)
    return want - have, have - want


def membership_changes(
    snapshot: Snapshot,
    add: Iterable[Pair],
    remove: Iterable[Pair],
    *,
    actor: str,
    now: float,
    note: str,
    base: Mapping[str, Label] | None = None,
) -> Changes:
    """The changes that add and remove ``(label, device)`` pairs (see the module
    comment). ``base`` gives labels as the caller is changing them in the same
    change list (a new label, new settings): they are written merged."""
    add, remove = set(add), set(remove)
    labels = dict(base or {})
    _check(snapshot, add | remove, labels)
    for name, _ in add | remove:
        if name not in labels:
            labels[name] = snapshot.labels[name]
    devices = {d: snapshot.devices[d] for _, d in remove}
    for name, device_id in sorted(remove):
        labels[name] = replace(labels[name], devices=labels[name].devices - {device_id})
        dev = devices[device_id]
        devices[device_id] = replace(dev, labels=dev.labels - {name})
    for name, device_id in sorted(add - remove):
        if device_id not in members_of(snapshot, name):
            labels[name] = replace(labels[name], devices=labels[name].devices | {device_id})
    out: list[Change] = []
    for name in sorted(labels):
        out += registry.put_label(snapshot, labels[name], actor=actor, now=now, note=note)
    for device_id in sorted(devices):
        dev = devices[device_id]
        out += registry.register_device(snapshot, dev, actor=actor, now=now, note=note)
    return tuple(out)


def _check(snapshot: Snapshot, pairs: set[Pair], base: Mapping[str, Label]) -> None:
    missing_labels = sorted({name for name, _ in pairs} - snapshot.labels.keys() - base.keys())
    if missing_labels:
        raise NotFound(f"no label {missing_labels[0]!r}")
    missing = sorted({d for _, d in pairs} - snapshot.devices.keys())
    if missing:
        problem = f"no such managed device: {', '.join(missing)}"
        raise Conflict("unknown devices", {"devices": problem})
