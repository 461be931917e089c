"""Overrides (issue 9 item 9): reset to automatic, pre-approval (Exchange's
personal exemption) and ``compliance_overrides_allow``, as conversations."""

from __future__ import annotations

import pytest

from sentry.model import AssociationKey, Preferences, Realm, Realms, Routing
from sentry.policy import Refuse, TransitionError, ValidationError, evaluate
from sentry.policy.audit import plain
from sentry.testing.conversation import Conversation

BLOCKED = 129


def noncompliant(conv: Conversation, user: str, eas_id: str) -> None:
    conv.add_user(user)
    conv.register_device("MDM-1", user, [eas_id])
    conv.set_compliance("MDM-1", "compromised")


def test_reset_clears_an_allow_and_the_table_decides_again():
    conv = Conversation()
    noncompliant(conv, "alice", "DEV1")
    conv.request("alice", "DEV1").expect_refuse(BLOCKED, reasons={"COMPLIANCE"})
    conv.allow("alice", "DEV1", note="CEO, exception for a week")
    conv.request("alice", "DEV1").expect_forward(reasons={"MANUAL", "COMPLIANCE"})
    conv.hold("alice", "DEV1")
    conv.reset("alice", "DEV1", note="exception over")
    assert conv.revoked[-1][0] == conv.key("alice", "DEV1")  # the held Ping ends at once
    row = conv.row("alice", "DEV1")
    assert row is not None and row.override is None
    conv.request("alice", "DEV1").expect_refuse(BLOCKED, reasons={"COMPLIANCE"})


def test_reset_clears_a_block_and_is_audited_with_its_note():
    conv = Conversation()
    conv.request("bob", "DEV2").expect_forward()
    conv.block("bob", "DEV2")
    conv.request("bob", "DEV2").expect_refuse(BLOCKED, reasons={"MANUAL"})
    changes = conv.reset("bob", "DEV2", note="ticket 7 closed")
    audit = [c.entry for c in changes if type(c).__name__ == "AppendAudit"]
    assert [(a.action, a.note) for a in audit] == [("reset", "ticket 7 closed")]
    assert audit[0].before is not None and audit[0].before["state"] == "blocked"
    assert audit[0].after is not None and audit[0].after["state"] == "none"
    conv.request("bob", "DEV2").expect_forward(reasons=())


def test_reset_needs_a_note_and_never_cancels_a_wipe():
    conv = Conversation()
    conv.request("bob", "DEV3")
    with pytest.raises(ValidationError):
        conv.reset("bob", "DEV3", note=" ")
    conv.wipe("bob", "DEV3")
    with pytest.raises(TransitionError) as caught:
        conv.reset("bob", "DEV3")
    assert caught.value.http_status == 409
    conv.request("bob", "DEV3").expect_wipe()


def test_preapproved_row_is_listed_never_seen_and_the_first_request_finds_it():
    realms = Realms((Realm("corp.example", netbios=frozenset({"corp"})),), "corp.example")
    conv = Conversation(prefs=Preferences(auto_block_unregistered=True), realms=realms)
    conv.preapprove("CORP\\Bob", "newphone1", note="new starter, phone ordered")
    row = conv.row("bob", "NEWPHONE1")
    assert row is not None and row.never_seen and row.device_type == ""
    assert row.override is not None and row.override.pre_approved
    assert (row.key.user, row.verdict.value) == ("bob@corp.example", "forward")
    assert row.verified_at is None  # until the backend accepts the device
    first_seen = row.first_seen
    # The device's first request: allowed (auto-block on) without any other admin action.
    conv.request("bob", "NEWPHONE1").expect_forward(reasons={"MANUAL", "AUTO_BLOCK"})
    row = conv.row("bob", "NEWPHONE1")
    assert row is not None and not row.never_seen and row.device_type == "iPhone"
    assert row.first_seen == first_seen  # its place for the limits is the approval's
    kinds = [e.kind for e in conv.store._history[row.key]]
    assert kinds == ["admin", "first_request", "verified", "established"]
    conv.request("bob", "NEWPHONE1").expect_touch_only()


def test_preapproval_holds_its_place_behind_existing_devices():
    conv = Conversation(prefs=Preferences(max_devices_per_mailbox=1))
    conv.request("alice", "OLD1").expect_forward()
    conv.preapprove("alice", "NEW1")
    conv.request("alice", "OLD1").expect_forward()  # not pushed out by the approval
    conv.request("alice", "NEW1").expect_forward(reasons={"MANUAL", "PER_MAILBOX_LIMIT"})
    conv.request("alice", "OTHER").expect_refuse(177, reasons={"PER_MAILBOX_LIMIT"})


def test_preapproval_refused_where_it_could_never_forward():
    routing = Routing(users={"alice": "exchange", "gus": "gmail"})
    conv = Conversation(routing=routing)
    conv.request("alice", "DEV1").expect_forward("exchange")
    with pytest.raises(TransitionError, match="MIXED_BACKEND"):
        conv.preapprove("gus", "DEV1")
    with pytest.raises(TransitionError, match="NO_BACKEND"):
        conv.preapprove("nobody", "DEV2")
    with pytest.raises(TransitionError, match="cannot preapprove"):
        conv.preapprove("alice", "DEV1")  # exists: use allow
    assert conv.snapshot.get(AssociationKey("DEV1", "gus")) is None


@pytest.mark.parametrize("device", ["validate", "web service", "x" * 600, ""])
def test_preapproval_needs_a_real_device_id(device):
    conv = Conversation()
    with pytest.raises(ValidationError):
        conv.preapprove("alice", device)
    assert len(conv.snapshot) == 0


def test_allow_beats_compliance_unless_compliance_overrides_allow():
    conv = Conversation()
    noncompliant(conv, "alice", "DEV1")
    conv.request("alice", "DEV1").expect_refuse(BLOCKED, reasons={"COMPLIANCE"})
    conv.allow("alice", "DEV1", note="exception")
    conv.request("alice", "DEV1").expect_forward(reasons={"MANUAL", "COMPLIANCE"})
    conv.hold("alice", "DEV1")
    conv.set_prefs(compliance_overrides_allow=True)
    assert conv.revoked[-1][0] == conv.key("alice", "DEV1")  # the held Ping ends at once
    conv.request("alice", "DEV1").expect_refuse(BLOCKED, reasons={"MANUAL", "COMPLIANCE"})
    conv.set_compliance("MDM-1")  # compliant again: the Allow forwards
    conv.request("alice", "DEV1").expect_forward(reasons={"MANUAL"})
    conv.set_prefs(compliance_overrides_allow=False)
    conv.set_compliance("MDM-1", "passcode")
    decision = evaluate(conv.key("alice", "DEV1"), conv.snapshot, conv.now)
    assert not isinstance(decision, Refuse)


def test_the_preference_never_lets_a_block_through():
    conv = Conversation(prefs=Preferences(compliance_overrides_allow=True))
    conv.request("bob", "DEV9")
    conv.block("bob", "DEV9")
    conv.request("bob", "DEV9").expect_refuse(BLOCKED, reasons={"MANUAL"})
    assert plain(conv.snapshot.prefs)["compliance_overrides_allow"] is True


def _exact(value: object) -> bool:
    """JSON-ready with the exact JSON types (a StrEnum equals its value, but
    the store would have to convert it: it is not plain)."""
    if type(value) is dict:
        return all(type(k) is str and _exact(v) for k, v in value.items())
    if type(value) is list:
        return all(_exact(v) for v in value)
    return type(value) in (str, int, float, bool, type(None))


def test_admin_history_and_audit_details_are_json_ready_as_built():
    """The store writes them without converting them first (``codec``): each
    action's history detail and audit before/after hold plain values only,
    the ones ``plain`` would give."""
    conv = Conversation()
    noncompliant(conv, "alice", "DEV1")
    conv.request("alice", "DEV1")
    changes = [
        *conv.block("alice", "DEV1", note="n1"),
        *conv.allow("alice", "DEV1", note="n2"),
        *conv.reset("alice", "DEV1", note="n3"),
        *conv.wipe("alice", "DEV1", note="n4"),
        *conv.remove("alice", "DEV1", note="n5"),
    ]
    details = [c.event.detail for c in changes if type(c).__name__ == "AppendHistory"]
    entries = [c.entry for c in changes if type(c).__name__ == "AppendAudit"]
    docs = details + [e.before for e in entries] + [e.after for e in entries if e.after]
    assert len(details) == 5 and len(entries) == 5
    assert all(_exact(d) and plain(d) == d for d in docs)
    blocked = entries[0].after
    assert blocked == {
        "state": "blocked",
        "link": None,
        "verdict": "refuse",
        "reasons": ["MANUAL", "COMPLIANCE"],
        "violations": ["compromised"],
        "device": "MDM-1",
        "unlinked": None,
        "pool": "exchange",
    }
    assert details[0] == {"action": "block", "note": "n1", "actor": "admin@test"} | {
        k: v for k, v in blocked.items() if k not in ("state", "link")
    }
