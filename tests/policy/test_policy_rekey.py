"""Re-keying stored principals when the configured realms change (``policy.rekey``)."""

from __future__ import annotations

import pytest

from sentry.model import (
    NO_REALMS,
    AssociationKey,
    Override,
    OverrideKind,
    Realm,
    Realms,
    User,
    WipeStatus,
)
from sentry.policy import ConflictError, MoveHistory, realm_changes
from sentry.policy.rekey import merge_rows
from sentry.testing.conversation import Conversation

NOW = 1_800_000_000.0
EXAMPLE = Realms((Realm("example.com", netbios=frozenset({"corp"})),), default="example.com")


def before_realms() -> Conversation:
    """Rows made with no realm configured: three spellings, three principals."""
    conv = Conversation()
    conv.add_user("alice", email="alice.smith@example.com")
    conv.register_device("M1", "alice", ["APP1"])
    conv.request("alice", "APP1")
    conv.request("CORP\\alice", "APP1")
    conv.block("CORP\\alice", "APP1", note="lost")
    conv.request("alice@example.com", "APP1")
    conv.request("bob@gmail.example", "APP2")
    return conv


def test_a_realm_change_re_keys_and_merges_the_most_restrictive_wins():
    conv = before_realms()
    snap = conv.snapshot
    changes = realm_changes(snap, EXAMPLE, NOW)
    snap.apply(changes)
    assert snap.realms == EXAMPLE
    assert set(snap.users) == {"alice@example.com"}  # the user is re-keyed too
    assert snap.devices["M1"].owner == "alice@example.com"
    assert [r.key.user for r in snap.on_device("APP1")] == ["alice@example.com"]
    merged = snap.get(AssociationKey("APP1", "alice@example.com"))
    assert merged.override is not None and merged.override.kind is OverrideKind.BLOCK
    assert merged.first_seen == min(r.first_seen for r in conv.store.load_now().on_device("APP1"))
    assert snap.get(AssociationKey("APP2", "bob@gmail.example")) is not None  # unchanged
    moved = {(c.old.user, c.new.user) for c in changes if isinstance(c, MoveHistory)}
    assert moved == {
        ("alice", "alice@example.com"),
        ("corp\\alice", "alice@example.com"),
    }
    assert snap.get(AssociationKey("APP1", "alice@example.com")).key in snap  # consistent index
    assert realm_changes(snap, EXAMPLE, NOW) == ()  # nothing more to do


def test_the_established_type_follows_its_row():
    conv = Conversation()
    conv.request("alice", "APP1")
    snap = conv.snapshot
    snap.apply(realm_changes(snap, EXAMPLE, NOW))
    assert snap.established("eas:APP1").key == AssociationKey("APP1", "alice@example.com")


def test_two_users_collapsing_into_one_principal_stop_the_change():
    conv = Conversation()
    conv.add_user("alice")
    conv.add_user("CORP\\alice", email="")
    with pytest.raises(ConflictError, match=r"would both be 'alice@example\.com'"):
        realm_changes(conv.snapshot, EXAMPLE, NOW)


def test_a_name_naming_two_users_after_the_change_stops_it():
    conv = Conversation()
    conv.add_user("alice", email="a@corp.example")
    conv.add_user("bob", email="", aliases=["CORP\\a"])
    realms = Realms((Realm("corp.example", netbios=frozenset({"corp"})),))
    with pytest.raises(ConflictError, match="would name both"):
        realm_changes(conv.snapshot, realms, NOW)


def test_going_back_to_no_realms_keeps_qualified_principals():
    conv = Conversation(realms=EXAMPLE)
    conv.request("alice", "APP1")
    snap = conv.snapshot
    snap.apply(realm_changes(snap, NO_REALMS, NOW))
    assert [r.key.user for r in snap.on_device("APP1")] == ["alice@example.com"]


def test_merge_rows_picks_the_most_restrictive_state_and_the_latest_facts():
    conv = Conversation()
    conv.request("alice", "D", device_type="Old", user_agent="old/1")
    conv.request("bob", "D", device_type="New", user_agent="new/2")
    a, b = conv.snapshot.get(conv.key("alice", "D")), conv.snapshot.get(conv.key("bob", "D"))
    wiped = a.__class__(**{**_fields(a), "wipe": WipeStatus.WIPED})
    allowed = b.__class__(
        **{**_fields(b), "override": Override(OverrideKind.ALLOW, "ok", "x", 1.0)}
    )
    key = AssociationKey("D", "carol")
    out = merge_rows([allowed, wiped], key)
    assert out.key == key and out.wipe is WipeStatus.WIPED  # wiped beats allowed
    assert (out.device_type, out.user_agent) == ("New", "new/2")  # the latest seen
    assert out.first_seen == a.first_seen and out.last_seen == b.last_seen
    assert out.verified_at == min(a.verified_at, b.verified_at)


def _fields(row: object) -> dict[str, object]:
    import dataclasses

    return {f.name: getattr(row, f.name) for f in dataclasses.fields(row)}  # type: ignore[arg-type]


def test_users_known_names_keep_working_after_the_change():
    conv = Conversation()
    conv.add_user("jdoe", email="john.doe@example.com")
    snap = conv.snapshot
    snap.apply(realm_changes(snap, EXAMPLE, NOW))
    assert snap.canonical("john.doe@example.com") == "jdoe@example.com"
    assert snap.canonical("CORP\\jdoe") == "jdoe@example.com"
    assert isinstance(snap.users["jdoe@example.com"], User)
