"""Units of the policy: templates, snapshot indexes, affected keys, refusal status, exports."""

from __future__ import annotations

import pytest

import sentry.policy as policy
from sentry.eas.status import CommonStatus
from sentry.model import (
    Association,
    AssociationKey,
    Device,
    ExchangeSetting,
    Label,
    Platform,
    Preferences,
    Realm,
    Realms,
    Reason,
    User,
    canonical_principal,
)
from sentry.policy import (
    DeleteAssociation,
    PutAssociation,
    PutDevice,
    PutLabel,
    PutPreferences,
    PutSetting,
    PutUser,
    Snapshot,
    Touch,
    affected_keys,
    refusal_status,
    resolve_pushed_mailboxes,
)
from sentry.policy.planner import absorb
from sentry.policy.templates import resolve_template
from sentry.testing.conversation import Conversation

ALICE = User("alice", "alice@corp.example", custom1="shared", custom2="shared@corp.example")


def key(device: str, user: str) -> AssociationKey:
    return AssociationKey(device, user)


# --- Templates ---


def test_resolve_template_substitutes_every_variable():
    assert resolve_template("$USERID$|$EMAIL$|$USER_CUSTOM1$", ALICE) == (
        "alice|alice@corp.example|shared"
    )
    with pytest.raises(ValueError, match=r"\$USER_CUSTOM3\$ has no value"):
        resolve_template("$USER_CUSTOM3$", ALICE)


def test_pushed_mailboxes_follow_labels_from_either_side():
    device = Device("M1", "alice", Platform.IOS, labels=frozenset({"by-device"}))
    settings = {
        "S1": ExchangeSetting("S1", "CORP\\$USER_CUSTOM1$", "$USER_CUSTOM2$"),
        "S2": ExchangeSetting("S2", "$USERID$", "$EMAIL$"),
    }
    labels = [
        Label("by-device", frozenset({"S1"})),
        Label("by-label", frozenset({"S2", "S9"}), frozenset({"M1"})),
        Label("other", frozenset({"S2"}), frozenset({"M2"})),
    ]
    pushed = resolve_pushed_mailboxes(device, ALICE, labels, settings)
    # No realms given: the NetBIOS domain stays in the principal.
    assert [m.principal for m in pushed.mailboxes] == ["corp\\shared", "alice"]
    assert pushed.principals == {"corp\\shared", "alice"}
    realms = Realms((Realm("corp.example", netbios=frozenset({"corp"})),), "corp.example")
    pushed = resolve_pushed_mailboxes(
        device, ALICE, labels, settings, lambda name: canonical_principal(name, realms)
    )
    assert pushed.principals == {"shared@corp.example", "alice@corp.example"}
    assert pushed.errors == ("Exchange setting 'S9': no such setting",)


def test_pushed_mailboxes_need_a_registered_owner():
    device = Device("M1", "ghost", labels=frozenset({"l"}))
    labels = [Label("l", frozenset({"S"}))]
    settings = {"S": ExchangeSetting("S", "$USERID$", "$EMAIL$")}
    pushed = resolve_pushed_mailboxes(device, None, labels, settings)
    assert pushed.mailboxes == ()
    assert "not a registered user" in pushed.errors[0]


# --- Snapshot ---


def test_snapshot_indexes_follow_put_and_delete():
    snap = Snapshot()
    snap.apply(
        [PutAssociation(Association(key("D1", "a"))), PutAssociation(Association(key("D1", "b")))]
    )
    snap.apply([PutAssociation(Association(key("D2", "a")))])
    assert {r.key.user for r in snap.on_device("D1")} == {"a", "b"}
    assert {r.key.device_id for r in snap.of_user("a")} == {"D1", "D2"}
    snap.apply([DeleteAssociation(key("D1", "a")), DeleteAssociation(key("NOPE", "x"))])
    assert [r.key.user for r in snap.on_device("D1")] == ["b"]
    assert [r.key.device_id for r in snap.of_user("a")] == ["D2"]
    assert len(snap) == 2


def test_snapshot_device_index_ignores_retired_devices_and_follows_updates():
    snap = Snapshot()
    snap.apply([PutDevice(Device("M1", "alice", eas_ids=frozenset({"A", "B"})))])
    assert snap.device_for_eas("A").id == "M1"
    snap.apply([PutDevice(Device("M1", "alice", eas_ids=frozenset({"B"})))])
    assert snap.device_for_eas("A") is None
    snap.apply([PutDevice(Device("M1", "alice", eas_ids=frozenset({"B"}), retired=True))])
    assert snap.device_for_eas("B") is None
    assert snap.devices_of("alice") == {"M1"}


def test_snapshot_pushed_cache_is_dropped_when_inputs_change():
    snap = Snapshot()
    snap.apply([PutUser(ALICE), PutDevice(Device("M1", "alice", labels=frozenset({"l"})))])
    snap.apply([PutSetting(ExchangeSetting("S", "$USER_CUSTOM1$", "$EMAIL$"))])
    assert snap.pushed("M1").principals == frozenset()
    snap.apply([PutLabel(Label("l", frozenset({"S"})))])
    assert snap.pushed("M1").principals == {"shared"}
    snap.apply([PutUser(User("alice", "a@corp.example", custom1="other"))])
    assert snap.pushed("M1").principals == {"other"}


def test_snapshot_touch_only_moves_forward_and_copies_are_independent():
    snap = Snapshot()
    snap.apply([PutAssociation(Association(key("D1", "a"), last_seen=10.0))])
    twin = snap.copy()
    snap.apply([Touch(key("D1", "a"), 5.0), Touch(key("GONE", "x"), 1.0)])
    assert snap.get(key("D1", "a")).last_seen == 10.0
    snap.apply([Touch(key("D1", "a"), 20.0)])
    assert twin.get(key("D1", "a")).last_seen == 10.0
    assert twin != snap
    with pytest.raises(TypeError):
        snap.apply(["nonsense"])  # type: ignore[list-item]


# --- Affected keys (live revocation) ---


def test_affected_keys_widen_to_device_and_mailbox_neighbours():
    conv = Conversation()
    for user, device in (("a", "D1"), ("b", "D1"), ("a", "D2"), ("c", "D3")):
        conv.request(user, device)
    row = conv.snapshot.get(key("D1", "b"))
    found = affected_keys([PutAssociation(row)], conv.snapshot)
    assert found == {key("D1", "b"), key("D1", "a")}
    assert affected_keys([DeleteAssociation(key("D2", "a"))], conv.snapshot) == {
        key("D2", "a"),
        key("D1", "a"),
    }


def test_affected_keys_of_a_device_and_of_preferences():
    conv = Conversation()
    conv.request("a", "D1")
    conv.request("b", "D2")
    device = Device("M1", "a", eas_ids=frozenset({"D1"}))
    assert affected_keys([PutDevice(device)], conv.snapshot) == {key("D1", "a")}
    style_only = Preferences(refusal_style="http403")  # type: ignore[arg-type]
    assert affected_keys([PutPreferences(style_only)], conv.snapshot) == set()
    limits = Preferences(max_devices_per_mailbox=1)
    assert len(affected_keys([PutPreferences(limits)], conv.snapshot)) == 2


def test_revocation_reaches_held_polls_on_block_and_preferences():
    conv = Conversation()
    conv.request("a", "D1")
    conv.request("b", "D2")
    conv.hold("a", "D1")
    conv.hold("b", "D2")
    conv.block("a", "D1", note="x")
    assert [k for k, _ in conv.revoked] == [key("D1", "a")]
    conv.set_prefs(auto_block_unregistered=True)
    assert [k for k, _ in conv.revoked] == [key("D1", "a"), key("D1", "a"), key("D2", "b")]
    assert conv.row("b", "D2").reasons == {Reason.AUTO_BLOCK}  # refreshed, not only revoked


def test_the_planner_applies_revokes_held_keys_only_and_records_moved_decisions():
    conv = Conversation()
    conv.request("a", "D1")
    conv.request("b", "D2")
    snapshot = conv.snapshot.copy()
    changes = policy.block(snapshot, key("D1", "a"), note="x", actor="t", now=conv.now)
    done = absorb(changes, snapshot, {key("D2", "b")}, conv.now)  # only b holds a poll
    assert key("D1", "a") in done.keys and done.revoked == ()
    prefs = Preferences(auto_block_unregistered=True)
    moved = policy.set_preferences(snapshot, prefs, actor="t", now=conv.now)
    done = absorb(moved, snapshot, (), conv.now)
    moved_keys = [c.association.key for c in done.refreshed if isinstance(c, PutAssociation)]
    assert moved_keys == [key("D1", "a"), key("D2", "b")]  # every reason is recorded
    row = snapshot.get(key("D2", "b"))
    assert row is not None and row.reasons == {Reason.AUTO_BLOCK}  # recorded in the snapshot
    snapshot = conv.snapshot.copy()
    changes = policy.block(snapshot, key("D1", "a"), note="x", actor="t", now=conv.now)
    absorb(changes, snapshot, (), conv.now)
    again = policy.reset(snapshot, key("D1", "a"), note="y", actor="t", now=conv.now)
    held = {key("D1", "a")}
    assert absorb(again, snapshot, held, conv.now).revoked == ()  # allowed again
    more = policy.block(snapshot, key("D1", "a"), note="z", actor="t", now=conv.now)
    ((revoked, decision),) = absorb(more, snapshot, held, conv.now).revoked
    assert revoked == key("D1", "a") and Reason.MANUAL in decision.reasons
    assert absorb((), snapshot, held, conv.now).keys == frozenset()


def test_the_planners_revocations_are_evaluate_on_the_changed_state():
    """``absorb`` decides the held keys whose rows it refreshes from the
    refresh's assessment: the revocations are exactly ``evaluate`` of every
    held affected key on the state with the changes applied (a kept row, an
    unknown key, rows that move and rows that stay, refused and forwarded)."""
    from sentry.policy import Forward, evaluate

    conv = Conversation()
    for user, dev in (("a", "D1"), ("b", "D1"), ("c", "D2"), ("d", "D3")):
        conv.request(user, dev)
    conv.block("d", "D3", note="x")
    now = conv.now
    lists = [
        lambda s: policy.block(s, key("D1", "a"), note="x", actor="t", now=now),
        lambda s: policy.reset(s, key("D3", "d"), note="x", actor="t", now=now),
        lambda s: policy.remove(s, key("D1", "b"), note="x", actor="t", now=now),
        lambda s: policy.set_preferences(
            s, Preferences(auto_block_unregistered=True), actor="t", now=now
        ),
        lambda s: policy.set_preferences(
            s, Preferences(max_mailboxes_per_device=1), actor="t", now=now
        ),
    ]
    held = {key("D1", "a"), key("D1", "b"), key("D2", "c"), key("D3", "d"), key("D9", "z")}
    for build in lists:
        for kept in (None, key("D1", "a")):
            snapshot = conv.snapshot.copy()
            changes = build(snapshot)
            expected = snapshot.copy()
            keys = affected_keys(changes, expected)
            expected.apply(changes)
            want = [(k, evaluate(k, expected, now)) for k in sorted(keys & held)]
            done = absorb(changes, snapshot, held, now, kept=kept)
            assert done.revoked == tuple((k, d) for k, d in want if not isinstance(d, Forward))
    assert any(
        absorb(b(conv.snapshot.copy()), conv.snapshot.copy(), held, now).revoked for b in lists
    )


# --- Refusal status, exports ---


def test_refusal_status_is_177_only_for_the_per_mailbox_limit_alone():
    # 177 MaximumDevicesReached means too many devices for the user (MS-ASCMD 2.2.2):
    # the per-mailbox limit. Too many mailboxes on one device is a plain 129.
    assert (
        refusal_status(frozenset({Reason.PER_MAILBOX_LIMIT})) is CommonStatus.MaximumDevicesReached
    )
    blocked = CommonStatus.DeviceIsBlockedForThisUser
    assert refusal_status(frozenset({Reason.PER_DEVICE_LIMIT})) is blocked
    assert refusal_status(frozenset({Reason.PER_DEVICE_LIMIT, Reason.PER_MAILBOX_LIMIT})) == 129
    mixed = frozenset({Reason.PER_MAILBOX_LIMIT, Reason.COMPLIANCE})
    assert refusal_status(mixed) is blocked


def test_exported_members():
    assert len(policy.__all__) == len(set(policy.__all__))
    for name in policy.__all__:
        assert getattr(policy, name) is not None


# --- The compact association table ---


def test_table_moves_between_single_and_tuple_storage():
    from dataclasses import replace

    from sentry.policy.table import AssociationTable

    table = AssociationTable()
    a, b, c = (Association(key("D1", u)) for u in ("a", "b", "c"))
    for row in (a, b, c):
        assert table.put(row) is None
    table.put(Association(key("D2", "a"), manual_link="M1"))
    assert (len(table), table.mailbox_count("D1"), table.device_count("a")) == (4, 3, 2)
    newer_b = replace(b, last_seen=5.0)
    assert table.put(newer_b) is b
    assert table.get("D1", "b") is newer_b and len(table) == 4
    assert table.delete("D1", "a") is a and table.delete("D1", "a") is None
    assert table.delete("D1", "c") is c
    assert table.on_device("D1") == [newer_b] and table.device_ids("a") == ("D2",)
    assert table.manually_linked("M1") == {key("D2", "a")}
    table.put(Association(key("D2", "a")))  # Link To removed
    assert table.manually_linked("M1") == set()
    assert sorted(r.key for r in table) == [key("D1", "b"), key("D2", "a")]
    assert table.get("D9", "a") is None and table.mailbox_count("D9") == 0


def test_fast_constructor_builds_equal_values_and_refuses_non_slots():
    import dataclasses

    from sentry.slots import fast_constructor

    row = Association(
        key("D1", "a"), "corp", "iPhone", first_seen=3.0, reasons=frozenset({Reason.MANUAL})
    )
    values = [getattr(row, f.name) for f in dataclasses.fields(Association)]
    assert fast_constructor(Association)(*values) == row

    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        x: int

    with pytest.raises(TypeError):
        fast_constructor(NoSlots)


def test_fast_setter_of_several_fields_equals_replace():
    import dataclasses

    from sentry.model import Override, OverrideKind, WipeStatus
    from sentry.slots import fast_setter

    row = Association(key("D1", "a"), "corp", "iPhone", wipe=WipeStatus.PENDING, last_seen=4.0)
    override = Override(OverrideKind.BLOCK, "n", "admin", 5.0)
    both = fast_setter(Association, "override", "wipe")
    new = both(row, override, WipeStatus.NONE)
    assert new == dataclasses.replace(row, override=override, wipe=WipeStatus.NONE)
    assert row.override is None and row.wipe is WipeStatus.PENDING  # the old row unchanged
    one = fast_setter(Association, "last_seen")
    assert one(row, 9.0) == dataclasses.replace(row, last_seen=9.0)
    with pytest.raises(TypeError):
        both(row, override)


def test_state_counts_follow_every_change():
    from collections import Counter

    from sentry.store.base import AssociationState, association_state

    conv = Conversation(prefs=Preferences(auto_block_unregistered=True))
    conv.request("alice", "DEV1").expect_refuse(129)
    conv.request("bob", "DEV2").expect_refuse(129)
    conv.allow("alice", "DEV1")
    conv.request("alice", "DEV1").expect_forward("exchange", reasons={"MANUAL", "AUTO_BLOCK"})
    conv.remove("bob", "DEV2")
    conv.wipe("alice", "DEV1")
    expected = Counter(association_state(r) for r in conv.snapshot.associations())
    counts = conv.snapshot.state_counts()
    assert {s: counts[s] for s in AssociationState if counts[s]} == dict(expected)
    assert counts[AssociationState.WIPE_PENDING] == 1 and sum(counts.values()) == 1
    assert conv.snapshot.copy().state_counts() == counts
