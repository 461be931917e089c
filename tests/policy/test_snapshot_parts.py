"""The Snapshot's two parts: entity tables and association indexes."""

from __future__ import annotations

import dataclasses

from sentry.model import Device, User
from sentry.policy.associations import INDEX_FOLLOW
from sentry.policy.changes import (
    CHANGE_TYPES,
    AppendAudit,
    AppendHistory,
    DeleteDevice,
    MoveHistory,
    PutDevice,
    PutUser,
)
from sentry.policy.entities import ENTITY_APPLY
from sentry.policy.snapshot import Snapshot

PHONE = Device("phone", "alice@corp.example", eas_ids=frozenset({"ID1", "ID2"}))


def test_every_change_type_reaches_a_part() -> None:
    records = {AppendAudit, AppendHistory, MoveHistory}
    assert set(ENTITY_APPLY) | set(INDEX_FOLLOW) | records == CHANGE_TYPES
    assert not records & (set(ENTITY_APPLY) | set(INDEX_FOLLOW))


def test_a_device_change_moves_the_device_indexes_with_the_table() -> None:
    snap = Snapshot.build(users=[User("alice@corp.example")], devices=[PHONE])
    assert snap.device_for_eas("ID1") is PHONE and snap.devices_of(PHONE.owner) == {"phone"}
    moved = dataclasses.replace(PHONE, owner="bob@corp.example", eas_ids=frozenset({"ID2"}))
    before = snap.copy()
    snap.apply([PutDevice(moved)])
    assert snap.device_for_eas("ID1") is None and snap.device_for_eas("ID2") is moved
    assert snap.devices_of(PHONE.owner) == set() and snap.devices_of(moved.owner) == {"phone"}
    assert before.device_for_eas("ID1") is PHONE  # a copy's indexes are its own
    assert before != snap and before.devices == {"phone": PHONE}
    snap.apply([DeleteDevice("phone")])
    assert snap.device_for_eas("ID2") is None and "phone" not in snap.devices


def test_the_entity_maps_read_through_the_snapshot() -> None:
    alice = User("alice@corp.example", email="alice@mail.example")
    snap = Snapshot()
    snap.apply([PutUser(alice)])
    assert snap.users is snap.tables.users and snap.users == {alice.principal: alice}
    assert snap.principal_of("alice@mail.example") == alice.principal
    assert snap == Snapshot.build(users=[alice])
