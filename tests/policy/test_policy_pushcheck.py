"""Pushed mailboxes checked at configuration time (issue 9 item 8), on the
policy functions: which writes introduce a problem, and which do not."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sentry.model import Device, Label, Platform, Routing, User
from sentry.policy import (
    DeleteLabel,
    PushConflictError,
    PutDevice,
    PutLabel,
    PutUser,
    check_pushes,
    new_push_problems,
    push_problems,
    put_label,
)
from sentry.policy.pushcheck import PushProblemKind
from sentry.testing.conversation import Conversation

ROUTING = Routing(users={"gus": "gmail"}, domains={"gmail.example": "gmail"}, default="exchange")


def world() -> Conversation:
    conv = Conversation(routing=ROUTING)
    for user in ("alice", "bob", "gus", "shared"):
        conv.add_user(user)
    conv.add_setting("bob", "bob", "bob@corp.example", priority=1)
    conv.add_setting("gus", "gus", "gus@corp.example", priority=2)
    conv.add_setting("shared", "shared", "shared@corp.example", priority=3)
    conv.register_device("PH", "alice", ["PHONE1"])
    return conv


def label(name: str, settings: list[str], devices: list[str]) -> PutLabel:
    return PutLabel(Label(name, frozenset(settings), frozenset(devices)))


def test_a_mailbox_of_another_type_than_the_owners_is_a_problem():
    conv = world()
    (problem,) = new_push_problems(conv.snapshot, [label("l", ["gus", "bob"], ["PH"])])
    assert (problem.device, problem.setting, problem.kind) == (
        "PH",
        "gus",
        PushProblemKind.MIXED_BACKEND,
    )
    with pytest.raises(PushConflictError) as caught:
        check_pushes(conv.snapshot, [label("l", ["gus"], ["PH"])])
    assert caught.value.http_status == 409 and caught.value.problems == (problem,)


def test_the_type_the_devices_associations_established_wins_over_the_owners():
    conv = world()
    conv.request("gus", "PHONE1").expect_forward("gmail")  # the device is gmail-type now
    conv.request("alice", "PHONE1").expect_refuse(129, reasons={"MIXED_BACKEND"})
    found = new_push_problems(conv.snapshot, [label("l", ["gus", "bob"], ["PH"])])
    assert [(p.setting, p.kind.value) for p in found] == [("bob", "MIXED_BACKEND")]


def test_an_old_problem_never_refuses_an_unrelated_write():
    conv = world()
    conv.snapshot.apply([label("bad", ["gus"], ["PH"])])  # e.g. from before this check
    assert [p.setting for p in push_problems(conv.snapshot, ["PH"])] == ["gus"]
    check_pushes(conv.snapshot, [label("other", ["shared"], ["PH"])])  # not refused
    changes = put_label(
        conv.snapshot, Label("other", frozenset({"shared"}), frozenset({"PH"})), actor="a", now=1
    )
    check_pushes(conv.snapshot, changes)


def test_android_counts_its_owner_and_a_freed_slot_is_checked_too():
    conv = world()
    droid = Device("DR", "alice", Platform.ANDROID, frozenset({"DROID1"}))
    conv.snapshot.apply([PutDevice(droid), label("two", ["bob", "gus"], ["DR"])])
    # bob (priority 1) has the one slot; gus is one account too many, flagged as such.
    assert [(p.setting, p.kind.value) for p in push_problems(conv.snapshot, ["DR"])] == [
        ("gus", "ANDROID_LIMIT")
    ]
    conv.snapshot.apply([label("one", ["bob"], ["DR"])])
    # Deleting "two" changes nothing (bob is still pushed by "one") ...
    assert new_push_problems(conv.snapshot, [DeleteLabel("two")]) == []
    # ... but taking bob out of "one" and "two" lets gus into the slot: mixed.
    found = new_push_problems(conv.snapshot, [DeleteLabel("one"), label("two", ["gus"], ["DR"])])
    assert [(p.setting, p.kind.value) for p in found] == [("gus", "MIXED_BACKEND")]


def test_platform_and_owner_changes_of_a_device_are_checked():
    conv = world()
    conv.snapshot.apply([label("l", ["bob", "shared"], ["PH"])])
    android = replace(conv.snapshot.devices["PH"], platform=Platform.ANDROID)
    assert [p.setting for p in new_push_problems(conv.snapshot, [PutDevice(android)])] == ["shared"]
    gus_owned = replace(conv.snapshot.devices["PH"], owner="gus")
    found = new_push_problems(conv.snapshot, [PutDevice(gus_owned)])
    assert {p.setting for p in found} == {"bob", "shared"}  # exchange mailboxes, gmail owner


def test_a_users_email_moving_a_pushed_mailbox_to_another_type_is_found():
    conv = world()
    conv.snapshot.apply([label("l", ["shared"], ["PH"])])
    moved = PutUser(User("shared", email="shared@gmail.example"))
    (problem,) = new_push_problems(conv.snapshot, [moved])
    assert (problem.device, problem.setting) == ("PH", "shared")
    assert new_push_problems(conv.snapshot, [PutUser(User("shared", email="s@corp.example"))]) == []


def test_retired_and_unlabelled_devices_have_no_problems():
    conv = world()
    conv.retire_device("PH")
    assert new_push_problems(conv.snapshot, [label("l", ["gus"], ["PH"])]) == []
    assert new_push_problems(conv.snapshot, [PutUser(User("gus", email="g@corp.example"))]) == []
