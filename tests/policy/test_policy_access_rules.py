"""Device access rules (Exchange ABQ): matching (Hypothesis for globs and versions),
checking, the decision table's order around them, live re-decision, audit."""

from __future__ import annotations

import fnmatch

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentry.model import (
    AccessRule,
    AccessRules,
    Association,
    AssociationKey,
    Device,
    DeviceInformation,
    Override,
    OverrideKind,
    Pool,
    Preferences,
    Reason,
    Routing,
    RuleAction,
    RuleField,
    RuleMatch,
    User,
    Verdict,
)
from sentry.policy import (
    ConflictError,
    NotFoundError,
    PutAccessRules,
    Snapshot,
    ValidationError,
    add_rule,
    affected_keys,
    move_rule,
    remove_rule,
)
from sentry.policy.access_rules import (
    MAX_SUBJECT,
    RuleSet,
    check_rule,
    compile_rule,
    facts_of,
    parse_version,
)
from sentry.policy.rules import assess
from sentry.store.base import AssociationState, association_state
from sentry.testing.conversation import Conversation

BLOCKED = 129
F, M, A = RuleField, RuleMatch, RuleAction


def rule(name: str, field: RuleField, match: RuleMatch, value: str, action: RuleAction):
    return AccessRule(name, field, match, value, action, note="test")


def add(conv: Conversation, r: AccessRule, position: int | None = None):
    return conv._admin(
        "rule", lambda snap, now: add_rule(snap, r, actor="admin", now=now, position=position)
    )


def facts(device_type=None, model=None, os=None, agent=None, version=None):
    return (device_type, model, os, agent, version)


# --- Matching ---


def test_versions_parse_as_major_minor_and_nothing_else():
    assert parse_version("14.1") == (14, 1) and parse_version(" 2.5 ") == (2, 5)
    for bad in (None, "", "14", "14.1.2", "v14.0", "14,0", "\u0661\u0664.\u0660", "99999.1"):
        assert parse_version(bad) is None


@given(st.integers(0, 99), st.integers(0, 99), st.integers(0, 99), st.integers(0, 99))
def test_version_rules_compare_major_minor_numerically(a, b, c, d):
    sent, wanted = (a, b), (c, d)
    for match, holds in (
        (M.LT, sent < wanted), (M.LE, sent <= wanted), (M.GT, sent > wanted),
        (M.GE, sent >= wanted), (M.EQUALS, sent == wanted),
    ):  # fmt: skip
        test = compile_rule(rule("v", F.PROTOCOL_VERSION, match, f"{c}.{d}", A.BLOCK))
        assert test(facts(version=f"{a}.{b}")) is holds


_GLOB_TEXT = st.text(alphabet="ab*?.-", max_size=12)


@given(_GLOB_TEXT, st.text(alphabet="abAB.-", max_size=16))
def test_glob_agrees_with_fnmatch_case_insensitively(pattern, subject):
    pattern = pattern or "a"
    test = compile_rule(rule("g", F.MODEL, M.GLOB, pattern, A.BLOCK))
    expected = fnmatch.fnmatchcase(subject.casefold(), pattern.casefold())
    assert test(facts(model=subject or None)) is (bool(subject) and expected)


@given(st.text(min_size=1, max_size=20), st.text(max_size=30))
def test_equals_and_prefix_are_plain_case_insensitive_text(value, subject):
    value = value.strip() or "x"
    eq = compile_rule(rule("e", F.DEVICE_TYPE, M.EQUALS, value, A.BLOCK))
    pre = compile_rule(rule("p", F.DEVICE_TYPE, M.PREFIX, value, A.BLOCK))
    got = facts(device_type=subject or None)
    assert eq(got) is (bool(subject) and subject.casefold() == value.casefold())
    assert pre(got) is (bool(subject) and subject.casefold().startswith(value.casefold()))


def test_a_missing_field_never_matches_and_huge_values_are_bounded():
    for field in F:
        match = M.LT if field is F.PROTOCOL_VERSION else M.GLOB
        value = "99.0" if field is F.PROTOCOL_VERSION else "*"
        assert compile_rule(rule("r", field, match, value, A.BLOCK))(facts()) is False
    # Only MAX_SUBJECT characters are compared: a glob on a huge value costs bounded work.
    huge = "a" * 100_000 + "b"
    star = compile_rule(rule("s", F.USER_AGENT, M.GLOB, "*a*a*a*a*a*a*b", A.BLOCK))
    assert star(facts(agent=huge)) is False  # the "b" is past MAX_SUBJECT
    assert star(facts(agent="a" * (MAX_SUBJECT - 7) + "aaaaaab")) is True


def test_facts_read_device_information_and_fall_back_to_its_user_agent():
    info = DeviceInformation(model="iPhone15,2", os="iOS 17.1", user_agent="Apple-iPhone/2101")
    conv = Conversation()
    conv.request("alice", "D1", device_info=info, user_agent=None)
    row = conv.row("alice", "D1")
    assert row is not None
    assert facts_of(row) == ("iPhone", "iPhone15,2", "iOS 17.1", "Apple-iPhone/2101", "16.1")


def test_the_rule_set_memo_is_bounded_and_answers_like_the_rules():
    rules = RuleSet(AccessRules((rule("a", F.OS, M.PREFIX, "android", A.BLOCK),)))
    for i in range(10_000):
        assert (rules.first(facts(os=f"Android {i}")) is not None) is True
    assert len(rules._memo) <= 8192


# --- Checking ---


@pytest.mark.parametrize(
    ("field", "match", "value", "problem"),
    [
        (F.PROTOCOL_VERSION, M.GLOB, "14.*", "does not compare versions"),
        (F.PROTOCOL_VERSION, M.LT, "fourteen", "not a version"),
        (F.PROTOCOL_VERSION, M.LT, " 14.0", "not a version"),
        (F.MODEL, M.LT, "14.0", "compares versions"),
        (F.USER_AGENT, M.EQUALS, "a\x00b", "control characters"),
        (F.USER_AGENT, M.GLOB, "x" * 129, "1 to 128"),
        (F.OS, M.EQUALS, "   ", "not blank"),
    ],
)
def test_a_rule_that_cannot_work_is_refused_at_creation(field, match, value, problem):
    with pytest.raises(ValidationError, match=problem):
        check_rule(rule("r", field, match, value, A.BLOCK))


def test_rule_names_are_checked_and_unique():
    conv = Conversation()
    for bad in ("", "-x", "a b", "x" * 65, "é"):
        with pytest.raises(ValidationError):
            add(conv, rule(bad, F.OS, M.EQUALS, "x", A.BLOCK))
    add(conv, rule("one", F.OS, M.EQUALS, "x", A.BLOCK))
    with pytest.raises(ConflictError):
        add(conv, rule("one", F.OS, M.EQUALS, "y", A.ALLOW))
    with pytest.raises(NotFoundError):
        move_rule(conv.snapshot, "two", 1, actor="a", now=1.0)
    with pytest.raises(NotFoundError):
        remove_rule(conv.snapshot, "two", actor="a", now=1.0)


# --- The decision table ---

OLD_EAS = rule("old-eas", F.PROTOCOL_VERSION, M.LT, "14.0", A.QUARANTINE)


def test_quarantine_refuses_names_the_rule_and_an_admin_resolves_it():
    conv = Conversation()
    add(conv, OLD_EAS)
    reply = conv.request("alice", "OLD1", version="12.1")
    reply.expect_refuse(BLOCKED, reasons={"QUARANTINE"})
    assert reply.outcome.decision.rule == "old-eas"
    row = conv.row("alice", "OLD1")
    assert row is not None and row.access_rule == "old-eas"
    assert association_state(row) is AssociationState.QUARANTINED
    conv.request("alice", "NEW1", version="16.1").expect_forward(reasons=())
    conv.allow("alice", "OLD1", note="old handheld, approved")  # the personal exemption wins
    conv.request("alice", "OLD1", version="12.1").expect_forward(reasons={"MANUAL", "QUARANTINE"})
    row = conv.row("alice", "OLD1")
    assert row is not None and association_state(row) is AssociationState.ALLOWED
    conv.request("bob", "OLD2", version="2.5").expect_refuse(BLOCKED)
    conv.block("bob", "OLD2", note="no")
    row = conv.row("bob", "OLD2")
    assert row is not None and association_state(row) is AssociationState.BLOCKED
    assert row.reasons == {Reason.MANUAL, Reason.QUARANTINE}


def test_the_first_matching_rule_decides():
    conv = Conversation()
    add(conv, rule("no-ipads", F.DEVICE_TYPE, M.EQUALS, "ipad", A.BLOCK))
    add(conv, rule("apple-ok", F.DEVICE_TYPE, M.PREFIX, "i", A.ALLOW))
    conv.request("a", "T1", device_type="iPad").expect_refuse(BLOCKED, reasons={"RULE_BLOCK"})
    conv.request("a", "P1", device_type="iPhone").expect_forward(reasons={"RULE_ALLOW"})
    conv._admin("move", lambda snap, now: move_rule(snap, "apple-ok", 1, actor="a", now=now))
    assert [r.name for r in conv.snapshot.access_rules.rules] == ["apple-ok", "no-ipads"]
    row = conv.row("a", "T1")  # re-decided at once by the move
    assert row is not None and row.reasons == {Reason.RULE_ALLOW} and row.access_rule == "apple-ok"


def test_an_allow_rule_lifts_auto_block_only():
    conv = Conversation(prefs=Preferences(auto_block_unregistered=True))
    add(conv, rule("corp-phones", F.MODEL, M.GLOB, "Pixel *", A.ALLOW))
    pixel = DeviceInformation(model="Pixel 8", os="Android 14")
    conv.request("a", "X1").expect_refuse(BLOCKED, reasons={"AUTO_BLOCK"})
    # DeviceInformation arrives with Settings: the model rule matches from then on.
    conv.request("a", "X1", "Settings", device_info=pixel).expect_forward(reasons={"RULE_ALLOW"})
    conv.request("b", "X2", device_info=pixel).expect_forward(reasons={"RULE_ALLOW"})
    conv.add_user("c")
    conv.register_device("MDM-C", "c", ["X3"])
    conv.set_compliance("MDM-C", "compromised")
    conv.request("c", "X3", device_info=pixel).expect_refuse(
        BLOCKED, reasons={"RULE_ALLOW", "COMPLIANCE"}
    )
    conv.set_prefs(max_devices_per_mailbox=1)
    conv.request("a", "X4", device_info=pixel).expect_refuse(
        177, reasons={"RULE_ALLOW", "PER_MAILBOX_LIMIT"}
    )


def test_hard_refusals_and_the_personal_exemption_come_before_rules():
    conv = Conversation()
    add(conv, rule("all-ok", F.DEVICE_TYPE, M.GLOB, "*", A.ALLOW))
    add(conv, rule("never", F.DEVICE_TYPE, M.EQUALS, "Bad", A.BLOCK), position=1)
    conv.preapprove("alice", "BAD1", note="exempt")
    conv.request("alice", "BAD1", device_type="Bad").expect_forward(
        reasons={"MANUAL", "RULE_BLOCK"}
    )
    conv.request("bob", "W1").expect_forward(reasons={"RULE_ALLOW"})
    conv.wipe("bob", "W1")
    conv.request("bob", "W1").expect_wipe()
    conv.set_routing(conv.snapshot.routing.__class__())  # no route at all
    conv.request("carol", "N1").expect_refuse(BLOCKED, reasons={"NO_BACKEND", "RULE_ALLOW"})


def test_a_new_rule_ends_held_polls_it_refuses_and_only_rows_it_changes_are_touched():
    conv = Conversation()
    conv.request("a", "OLD", version="12.1")
    conv.request("b", "NEW", version="16.1")
    conv.hold("a", "OLD")
    conv.hold("b", "NEW")
    new = AccessRules((OLD_EAS,))
    assert affected_keys([PutAccessRules(new)], conv.snapshot) == {conv.key("a", "OLD")}
    add(conv, OLD_EAS)
    assert [k for k, _ in conv.revoked] == [conv.key("a", "OLD")]
    assert conv.revoked[0][1].reasons == {Reason.QUARANTINE}
    row = conv.row("a", "OLD")
    assert row is not None and row.access_rule == "old-eas"
    kinds = [e.kind for e in conv.store._history[row.key]]
    assert kinds[-1] == "decision"
    assert conv.store._history[row.key][-1].detail["after"]["rule"] == "old-eas"
    conv._admin("rm", lambda snap, now: remove_rule(snap, "old-eas", actor="a", now=now))
    row = conv.row("a", "OLD")
    assert row is not None and row.access_rule is None and row.reasons == frozenset()


def test_rule_changes_are_audited_with_position_and_note():
    conv = Conversation()
    changes = add(conv, OLD_EAS)
    add(conv, rule("b", F.OS, M.EQUALS, "x", A.BLOCK), position=99)  # past the end: last
    assert [r.name for r in conv.snapshot.access_rules.rules] == ["old-eas", "b"]
    moved = move_rule(conv.snapshot, "b", 1, actor="ann", now=5.0, note="first")
    removed = remove_rule(conv.snapshot, "old-eas", actor="ann", now=6.0, note="gone")
    entries = [c.entry for c in (*changes, *moved, *removed) if type(c).__name__ == "AppendAudit"]
    assert [(e.action, e.target) for e in entries] == [
        ("add_access_rule", "access_rule:old-eas"),
        ("move_access_rule", "access_rule:b"),
        ("remove_access_rule", "access_rule:old-eas"),
    ]
    assert entries[0].after is not None and entries[0].after["position"] == 1
    assert (entries[1].before, entries[1].after, entries[1].note) == (
        {"position": 2},
        {"position": 1},
        "first",
    )
    assert move_rule(conv.snapshot, "old-eas", 1, actor="a", now=1.0) == ()  # already there


# --- The order as a property: every combination against a reference ---

_OVERRIDES = (None, OverrideKind.ALLOW, OverrideKind.BLOCK)


@given(
    override=st.sampled_from(_OVERRIDES),
    action=st.sampled_from((None, *RuleAction)),
    managed=st.sampled_from(("none", "compliant", "noncompliant")),
    auto_block=st.booleans(),
)
def test_the_table_order_around_rules_for_every_combination(override, action, managed, auto_block):
    rules = () if action is None else (rule("r", F.DEVICE_TYPE, M.EQUALS, "T", action),)
    devices = [] if managed == "none" else [
        Device("M1", "u", eas_ids=frozenset({"D1"}), compliant=managed == "compliant",
               violations=frozenset() if managed == "compliant" else frozenset({"passcode"}))
    ]  # fmt: skip
    snap = Snapshot.build(
        users=[User("u")],
        devices=devices,
        pools=[Pool("exchange", "exchange")],
        routing=Routing(default="exchange"),
        prefs=Preferences(auto_block_unregistered=auto_block),
        access_rules=AccessRules(rules),
    )
    over = None if override is None else Override(override, "n", "a", 1.0)
    row = Association(AssociationKey("D1", "u"), device_type="T", override=over)
    got = assess(row, snap)
    expected: set[Reason] = set()
    if override is not None:
        expected.add(Reason.MANUAL)
    if action is not None:
        by_action = {A.ALLOW: Reason.RULE_ALLOW, A.BLOCK: Reason.RULE_BLOCK}
        expected.add(by_action.get(action, Reason.QUARANTINE))
    if managed == "noncompliant":
        expected.add(Reason.COMPLIANCE)
    if managed == "none" and auto_block and action is not A.ALLOW:
        expected.add(Reason.AUTO_BLOCK)
    if override is OverrideKind.BLOCK:
        verdict = Verdict.REFUSE
    elif override is OverrideKind.ALLOW:
        verdict = Verdict.FORWARD  # the personal exemption beats every rule
    else:
        refusing = {Reason.RULE_BLOCK, Reason.QUARANTINE, Reason.COMPLIANCE, Reason.AUTO_BLOCK}
        verdict = Verdict.REFUSE if expected & refusing else Verdict.FORWARD
    assert (got.verdict, got.reasons, got.rule) == (
        verdict,
        expected,
        None if action is None else "r",
    )
