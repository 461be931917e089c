"""design.md §5 behaviours 1-10 and the seed's two methods, as scripted conversations."""

from __future__ import annotations

import pytest

from sentry.model import (
    AssociationKey,
    OverrideKind,
    Platform,
    Preferences,
    Reason,
    Routing,
    Verdict,
    WipeStatus,
)
from sentry.policy import Refuse, TransitionError, Wipe, decide, evaluate, options_pool
from sentry.policy.decisions import ProvisionKind, RequestFacts
from sentry.store.sqlite import SqliteStore
from sentry.testing.conversation import Conversation, req

BLOCKED, LIMIT, WIPE = 129, 177, 140


def registered(conv: Conversation, user: str, device_id: str, eas_id: str) -> None:
    conv.add_user(user)
    conv.register_device(device_id, user, [eas_id])


# 1. Two accounts on one device give two associations with the same DeviceId.
def test_two_accounts_on_one_device_are_two_associations():
    conv = Conversation()
    conv.request("alice", "DEV1").expect_forward("exchange")
    conv.request("CORP\\Bob", "dev1").expect_forward("exchange")
    rows = conv.snapshot.on_device("DEV1")
    # No realm is configured: the NetBIOS domain stays in the principal.
    assert sorted(r.key.user for r in rows) == ["alice", "corp\\bob"]
    assert {r.key.device_id for r in rows} == {"DEV1"}


# 2. Auto-block off: unlinked allowed and listed; on: refused until allowed; the allow lasts.
def test_unregistered_device_allowed_by_default_and_listed():
    conv = Conversation()
    conv.request("alice", "DEV1").expect_forward("exchange").expect_unlinked("device_unknown")
    assert conv.row("alice", "DEV1") is not None


def test_auto_block_refuses_until_an_admin_allows_and_the_allow_lasts():
    conv = Conversation(prefs=Preferences(auto_block_unregistered=True))
    conv.request("alice", "DEV1").expect_refuse(BLOCKED, reasons={"AUTO_BLOCK"})
    assert conv.row("alice", "DEV1") is not None  # listed whatever the decision
    conv.allow("alice", "DEV1", note="helpdesk ticket 42")
    for _ in range(3):  # every reason that applies is recorded, Allow decides
        conv.request("alice", "DEV1").expect_forward(reasons={"MANUAL", "AUTO_BLOCK"})
    conv.request("alice", "DEV1").expect_touch_only()


# 3 + the seed's first method: a pushed second mailbox is linked and allowed, no admin action.
def test_pushed_second_mailbox_is_linked_and_allowed():
    conv = Conversation(prefs=Preferences(auto_block_unregistered=True))
    conv.add_user("alice", custom1="shared.sales", custom2="sales@corp.example")
    conv.add_user("shared.sales")
    conv.register_device("MDM-1", "alice", ["APPL1"])
    conv.add_setting("Second mailbox", "$USER_CUSTOM1$", "$USER_CUSTOM2$")
    conv.add_label("sales-phones", ["Second mailbox"], ["MDM-1"])
    pushed = conv.snapshot.pushed("MDM-1")
    assert [(m.user_name, m.email) for m in pushed.mailboxes] == [
        ("shared.sales", "sales@corp.example")
    ]
    conv.request("alice", "APPL1").expect_forward("exchange", reasons=()).expect_linked("MDM-1")
    conv.request("shared.sales", "APPL1").expect_forward(reasons=()).expect_linked("MDM-1")
    assert not conv.store.load_now().get(conv.key("shared.sales", "APPL1")).override


# The seed's second method: a manually added mailbox with auto-block on.
def test_manually_added_mailbox_refused_then_allowed():
    conv = Conversation(prefs=Preferences(auto_block_unregistered=True))
    registered(conv, "alice", "MDM-1", "APPL1")
    conv.add_user("bob")
    conv.request("alice", "APPL1").expect_forward().expect_linked("MDM-1")
    conv.request("bob", "APPL1").expect_refuse(BLOCKED, reasons={"AUTO_BLOCK"})
    assert conv.snapshot.get(conv.key("bob", "APPL1")).unlinked.value == "not_entitled"
    conv.allow("bob", "APPL1", note="second account approved")
    conv.request("bob", "APPL1").expect_forward(reasons={"MANUAL", "AUTO_BLOCK"})


def test_android_takes_at_most_two_exchange_accounts_by_priority():
    # EPMM: an Android device holds two Exchange accounts, the owner's own among
    # them; the settings' priority (not their names) decides which one applies.
    conv = Conversation(prefs=Preferences(auto_block_unregistered=True))
    conv.add_user("alice", custom1="one", custom2="two", custom3="three")
    for user in ("one", "two", "three"):
        conv.add_user(user)
    conv.register_device("MDM-A", "alice", ["ANDROID1"], platform=Platform.ANDROID)
    conv.add_setting("A", "$USER_CUSTOM1$", "$EMAIL$", priority=3)
    conv.add_setting("B", "$USER_CUSTOM2$", "$EMAIL$", priority=1)
    conv.add_setting("C", "$USER_CUSTOM3$", "$EMAIL$", priority=2)
    conv.add_label("android", ["A", "B", "C"], ["MDM-A"])
    pushed = conv.snapshot.pushed("MDM-A")
    assert [m.setting for m in pushed.mailboxes] == ["B"]
    assert pushed.capped == ("C", "A")
    assert pushed.errors[0] == (
        "Exchange setting 'C': not applied, an Android device takes at most 2 Exchange "
        "accounts (its owner's included)"
    )
    conv.request("two", "ANDROID1", device_type="Android").expect_forward().expect_linked()
    conv.request("one", "ANDROID1", device_type="Android").expect_refuse(
        BLOCKED, reasons={"AUTO_BLOCK"}
    ).expect_unlinked("not_entitled")
    # The owner's own account pushed by a setting is that account, not a third one.
    conv.add_setting("Own", "$USERID$", "$EMAIL$", priority=1)
    conv.add_label("android", ["Own", "A", "B", "C"], ["MDM-A"])
    pushed = conv.snapshot.pushed("MDM-A")
    assert [m.setting for m in pushed.mailboxes] == ["B", "Own"]
    assert pushed.capped == ("C", "A")


def test_unresolved_template_variable_is_reported_not_pushed_as_empty():
    conv = Conversation()
    conv.add_user("alice")  # no custom1
    conv.register_device("MDM-1", "alice", ["APPL1"])
    conv.add_setting("Shared", "$USER_CUSTOM1$", "$EMAIL$")
    conv.add_setting("Typo", "$USERNAME$", "$EMAIL$")
    conv.add_label("all", ["Shared", "Typo"], ["MDM-1"])
    pushed = conv.snapshot.pushed("MDM-1")
    assert pushed.mailboxes == ()
    assert pushed.errors == (
        "Exchange setting 'Shared': $USER_CUSTOM1$ has no value for user 'alice'",
        "Exchange setting 'Typo': $USERNAME$ is not a known variable",
    )


# 4. Compliance: every row on the device refused; same mailbox elsewhere fine; restored after.
def test_non_compliant_device_refuses_every_association_only_on_that_device():
    conv = Conversation()
    registered(conv, "alice", "MDM-1", "PHONE")
    conv.register_device("MDM-2", "alice", ["TABLET"])
    conv.request("alice", "PHONE").expect_forward()
    conv.request("bob", "PHONE").expect_forward()  # second account, not entitled
    conv.request("alice", "TABLET").expect_forward()
    conv.hold("alice", "PHONE")
    conv.set_compliance("MDM-1", "passcode", "os_version")
    assert [k for k, _ in conv.revoked] == [conv.key("alice", "PHONE")]
    refused = conv.request("alice", "PHONE").expect_refuse(BLOCKED, reasons={"COMPLIANCE"})
    assert refused.decision.violations == {"passcode", "os_version"}
    conv.request("bob", "PHONE").expect_refuse(BLOCKED, reasons={"COMPLIANCE"})
    conv.request("alice", "TABLET").expect_forward(reasons=())
    conv.set_compliance("MDM-1")
    conv.request("alice", "PHONE").expect_forward(reasons=())


def test_return_to_compliance_does_not_lift_an_admin_block():
    conv = Conversation()
    registered(conv, "alice", "MDM-1", "PHONE")
    conv.request("alice", "PHONE").expect_forward()
    conv.set_compliance("MDM-1", "compromised")
    conv.block("alice", "PHONE", note="lost phone")
    conv.set_compliance("MDM-1")
    conv.request("alice", "PHONE").expect_refuse(BLOCKED, reasons={"MANUAL"})


# 5. Allow beats compliance and auto-block; Block refuses; one row each; note stored.
def test_allow_overrides_compliance_and_block_touches_only_its_row():
    conv = Conversation(prefs=Preferences(auto_block_unregistered=True))
    registered(conv, "alice", "MDM-1", "PHONE")
    conv.request("alice", "PHONE").expect_forward()
    conv.request("carol", "PHONE").expect_refuse(BLOCKED, reasons={"AUTO_BLOCK"})
    conv.set_compliance("MDM-1", "compromised")
    conv.allow("alice", "PHONE", note="CEO, exception approved")
    conv.request("alice", "PHONE").expect_forward(reasons={"MANUAL", "COMPLIANCE"})
    conv.request("carol", "PHONE").expect_refuse(BLOCKED, reasons={"COMPLIANCE", "AUTO_BLOCK"})
    conv.set_compliance("MDM-1")
    before = conv.store.load_now().get(conv.key("carol", "PHONE"))
    conv.block("alice", "PHONE", note="left the company")
    assert conv.store.load_now().get(conv.key("carol", "PHONE")) == before
    row = conv.row("alice", "PHONE")
    assert row.override.kind is OverrideKind.BLOCK
    assert (row.override.note, row.override.actor) == ("left the company", "admin@test")
    conv.request("alice", "PHONE").expect_refuse(BLOCKED, reasons={"MANUAL"})


def test_admin_actions_need_a_note():
    from sentry.policy import ValidationError, allow

    conv = Conversation()
    conv.request("alice", "DEV1")
    with pytest.raises(ValidationError):
        allow(conv.snapshot, conv.key("alice", "DEV1"), note="  ", actor="x", now=1.0)


# 6. Wipe: next request gets it; ack -> Wiped; only Remove then; a fresh row after.
# The acknowledgement itself is answered per MS-ASPROV 3.2.5.1.2.2: failure ->
# Status 2 and the directive again; success -> Status 1 (was a 129 refusal).
def test_wipe_lifecycle():
    conv = Conversation()
    conv.request("alice", "DEV1").expect_forward()
    conv.request("bob", "DEV1").expect_forward()
    conv.hold("alice", "DEV1")
    conv.wipe("alice", "DEV1", note="stolen")
    assert isinstance(conv.revoked[-1][1], Wipe)
    conv.request("alice", "DEV1", "Ping").expect_wipe(account_only=False)
    conv.request("bob", "DEV1").expect_forward()  # the other mailbox is its own row
    conv.wipe_ack("alice", "DEV1", status=2).expect_wipe_ack(succeeded=False)  # repeat
    assert conv.row("alice", "DEV1").wipe is WipeStatus.FAILED
    conv.request("alice", "DEV1", "Provision").expect_wipe()  # the directive, again
    conv.wipe_ack("alice", "DEV1", status=1).expect_wipe_ack(succeeded=True)
    assert conv.row("alice", "DEV1").wipe is WipeStatus.WIPED
    conv.wipe_ack("alice", "DEV1", status=1).expect_wipe_ack(succeeded=True)  # a retry
    conv.request("alice", "DEV1").expect_refuse(BLOCKED, reasons={"WIPE"})
    for action in (conv.allow, conv.block, conv.wipe):
        with pytest.raises(TransitionError):
            action("alice", "DEV1")
    with pytest.raises(TransitionError):
        conv.link_to("alice", "DEV1", "MDM-X")
    conv.remove("alice", "DEV1", note="device returned to stock")
    assert conv.row("alice", "DEV1") is None
    conv.request("alice", "DEV1").expect_forward(reasons=())
    assert conv.row("alice", "DEV1").override is None


def test_account_only_wipe_is_carried_on_the_decision():
    conv = Conversation()
    conv.request("alice", "DEV1")
    conv.wipe("alice", "DEV1", note="leaver, keep personal data", account_only=True)
    conv.request("alice", "DEV1", "Provision", provision=ProvisionKind.EMPTY).expect_wipe(
        account_only=True
    )


# 7. Mixed backend types refuse the newer; no route refuses; fail closed beats Allow.
def test_mixed_backend_types_refuse_the_newer_association():
    conv = Conversation(routing=Routing(users={"gus": "gmail"}, default="exchange"))
    conv.request("alice", "DEV1").expect_forward("exchange")
    conv.request("gus", "DEV1").expect_refuse(BLOCKED, reasons={"MIXED_BACKEND"})
    conv.allow("gus", "DEV1", note="please")
    conv.request("gus", "DEV1").expect_refuse(BLOCKED, reasons={"MIXED_BACKEND", "MANUAL"})
    conv.request("alice", "DEV1").expect_forward("exchange")  # the established type stays
    conv.request("gus", "DEV2").expect_forward("gmail")


def test_mailbox_without_route_is_refused_even_when_allowed():
    conv = Conversation(routing=Routing(domains={"corp.example": "exchange"}))
    conv.request("alice@corp.example", "DEV1").expect_forward("exchange")
    conv.request("eve@elsewhere.example", "DEV2").expect_refuse(BLOCKED, reasons={"NO_BACKEND"})
    conv.allow("eve@elsewhere.example", "DEV2", note="try")
    conv.request("eve@elsewhere.example", "DEV2").expect_refuse(
        BLOCKED, reasons={"NO_BACKEND", "MANUAL"}
    )


def test_per_mailbox_and_per_device_limits():
    conv = Conversation(prefs=Preferences(max_devices_per_mailbox=2, max_mailboxes_per_device=1))
    conv.request("alice", "D1").expect_forward()
    conv.request("alice", "D2").expect_forward()
    conv.request("alice", "D3").expect_refuse(LIMIT, reasons={"PER_MAILBOX_LIMIT"})
    # Too many mailboxes on one device is 129, not 177 (177 = too many devices for the user).
    conv.request("bob", "D1").expect_refuse(BLOCKED, reasons={"PER_DEVICE_LIMIT"})
    conv.request("alice", "D1").expect_forward()  # the oldest keeps its slot
    conv.remove("alice", "D1", note="old phone")
    conv.request("alice", "D3").expect_forward()
    # Limits and compliance together: every reason that applies is recorded.
    conv.add_user("alice")
    conv.register_device("MDM-4", "alice", ["D4"])
    conv.set_compliance("MDM-4", "out_of_contact")
    conv.request("alice", "D4").expect_refuse(BLOCKED, reasons={"COMPLIANCE", "PER_MAILBOX_LIMIT"})


# 8. State survives a restart: replay into SQLite, reopen, same state and decisions.
async def test_state_survives_a_restart(tmp_path):
    conv = Conversation(prefs=Preferences(auto_block_unregistered=True))
    registered(conv, "alice", "MDM-1", "PHONE")
    conv.request("alice", "PHONE").expect_forward()
    conv.request("bob", "PHONE").expect_refuse(BLOCKED)
    conv.allow("bob", "PHONE", note="ok")
    conv.request("carol", "TAB").expect_refuse(BLOCKED)
    conv.wipe("carol", "TAB", note="lost")
    store = await SqliteStore.open(tmp_path / "sentry.db")
    for changes in conv.log:
        await store.apply(changes)
    await store.close()
    reopened = await SqliteStore.open(tmp_path / "sentry.db")
    snapshot = await reopened.load()
    await reopened.close()
    assert snapshot == conv.snapshot
    for user, device in (("alice", "PHONE"), ("bob", "PHONE"), ("carol", "TAB")):
        key = AssociationKey(device, user)
        now = conv.now + 10
        assert evaluate(key, snapshot, now) == evaluate(key, conv.snapshot, now)


# 9. Registry unreachable: known rows keep their last decision; new ones follow the preference.
@pytest.mark.parametrize("access", ["allow", "block"])
def test_registry_unreachable(access):
    prefs = Preferences(
        auto_block_unregistered=True, new_device_access_when_registry_unreachable=access
    )
    conv = Conversation(prefs=prefs)
    registered(conv, "alice", "MDM-1", "PHONE")
    conv.request("alice", "PHONE").expect_forward()
    conv.request("bob", "OTHER").expect_refuse(BLOCKED, reasons={"AUTO_BLOCK"})
    conv.registry_reachable = False
    conv.request("alice", "PHONE").expect_forward().expect_touch_only()
    conv.request("bob", "OTHER").expect_refuse(BLOCKED, reasons={"AUTO_BLOCK"})
    new = conv.request("carol", "NEW")
    if access == "allow":
        new.expect_forward(reasons=())
    else:
        new.expect_refuse(BLOCKED, reasons={"REGISTRY_UNREACHABLE"})
    assert conv.row("carol", "NEW") is not None


def test_a_row_decided_during_an_outage_records_what_the_device_got():
    # The request's commit must not re-record it as what the registry data in
    # memory says (AUTO_BLOCK): the forwarded row, once the backend accepts it,
    # establishes its device's type (a later Allow then cannot mix types).
    conv = Conversation(prefs=Preferences(auto_block_unregistered=True))
    conv.registry_reachable = False
    outage = conv.request("bob", "D1").expect_forward(reasons=())
    assert outage.row.verdict is Verdict.FORWARD
    outage.expect_verified()
    established = conv.snapshot.established("eas:D1")
    assert established is not None and established.backend_type == "exchange"


def test_registry_unreachable_still_processes_a_wipe():
    conv = Conversation()
    conv.request("alice", "DEV1")
    conv.wipe("alice", "DEV1", note="stolen")
    conv.registry_reachable = False
    conv.request("alice", "DEV1").expect_wipe()
    conv.wipe_ack("alice", "DEV1").expect_wipe_ack(succeeded=True)
    assert conv.row("alice", "DEV1").wipe is WipeStatus.WIPED
    conv.request("alice", "DEV1").expect_refuse(BLOCKED, reasons={"WIPE"})


# 10. Several ActiveSync policies on one device are flagged (not refused).
def test_several_policies_on_one_device_are_flagged_ambiguous():
    conv = Conversation()
    conv.request("alice", "DEV1")
    conv.request("bob", "DEV1")
    conv.request("carol", "DEV2")
    conv.record_policy("alice", "DEV1", "policy-A")
    assert not conv.row("alice", "DEV1").ambiguous_policy
    conv.record_policy("bob", "DEV1", "policy-B")
    assert conv.row("alice", "DEV1").ambiguous_policy
    assert conv.row("bob", "DEV1").ambiguous_policy
    assert not conv.row("carol", "DEV2").ambiguous_policy
    conv.request("bob", "DEV1").expect_forward()  # a flag, not a refusal
    conv.remove("bob", "DEV1", note="gone")
    assert not conv.row("alice", "DEV1").ambiguous_policy


# Edges of decide itself.
def test_throwaway_device_id_is_stored_listed_and_refused_with_auto_block():
    # (This test replaces "decided but never stored": issue 9 item 5.)
    conv = Conversation(prefs=Preferences(auto_block_unregistered=True))
    conv.request("alice", "validate", device_type="Android").expect_refuse(
        BLOCKED, reasons={"AUTO_BLOCK"}
    )
    row = conv.row("alice", "validate")
    assert row is not None and row.throwaway and not row.counted


def test_options_is_routed_in_policy_not_decided():
    conv = Conversation(routing=Routing(users={"gus": "gmail"}, default="exchange"))
    assert options_pool(conv.snapshot, "gus") == "gmail"  # the user's own pool
    assert options_pool(conv.snapshot, "alice") == "exchange"
    assert options_pool(conv.snapshot, None) == "exchange"  # no user: the default pool
    conv.set_routing(Routing(users={"gus": "gmail"}))
    assert options_pool(conv.snapshot, None) is None  # the gateway answers itself


def test_options_is_not_decided():
    from dataclasses import replace

    from sentry.policy import Snapshot, UndecidableRequest

    options = replace(req("alice", "DEV1"), method="OPTIONS", command=None)
    with pytest.raises(UndecidableRequest):
        decide(options, RequestFacts(), Snapshot(), 0.0)


def test_known_row_with_new_device_information_is_updated():
    from sentry.model import DeviceInformation

    conv = Conversation()
    conv.request("alice", "DEV1").expect_forward()
    info = DeviceInformation(model="iPhone15,2", os="iOS 17.1", imei="3569")
    reply = conv.request("alice", "DEV1", "Settings", device_info=info)
    assert reply.outcome.changes[0].association.device_info == info
    conv.request("alice", "DEV1").expect_touch_only()


def test_refusal_decision_reasons_are_enums():
    conv = Conversation(routing=Routing())
    reply = conv.request("alice", "DEV1")
    assert isinstance(reply.decision, Refuse)
    assert reply.decision.reasons == {Reason.NO_BACKEND}


def test_account_only_wipe_of_an_older_client_is_refused_not_escalated():
    conv = Conversation()
    conv.request("alice", "DEV1", version="14.1").expect_forward("exchange")
    with pytest.raises(TransitionError, match=r"needs EAS 16\.1"):
        conv.wipe("alice", "DEV1", note="leaver", account_only=True)
    conv.request("alice", "DEV1", version="14.1").expect_forward("exchange")
