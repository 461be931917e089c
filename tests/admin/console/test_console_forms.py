"""Form fields as API input (pure): the console sends what the API takes."""

from __future__ import annotations

import pytest

from sentry.admin.api import find_route
from sentry.admin.console.forms import (
    action_form,
    bulk_form,
    changed_preferences,
    list_query,
    typed,
)
from sentry.admin.console.signin import local_next
from sentry.admin.schema import Field


def test_typed_follows_the_field_kind():
    assert typed(Field("boolean"), "true") is True
    assert typed(Field("boolean"), "false") is False
    assert typed(Field("boolean"), "maybe") == "maybe"  # the API says what is wrong
    assert typed(Field("integer"), " 12 ") == 12
    assert typed(Field("integer"), "1e3") == "1e3"
    assert typed(Field("string"), " x ") == "x"


def test_list_query_keeps_what_the_route_takes_and_was_given():
    route, _ = find_route("GET", "/api/associations")
    query = {"user": " alice ", "state": "", "offset": "100", "evil": "1", "limit": "25"}
    assert list_query(query, route.query) == {"user": "alice", "offset": "100", "limit": "25"}


@pytest.mark.parametrize(
    ("fields", "action", "body"),
    [
        ({"action": "allow", "note": "n"}, "allow", {"note": "n"}),
        ({"action": "wipe", "note": "n"}, "wipe", {"note": "n"}),
        ({"action": "wipe_account", "note": "n"}, "wipe", {"note": "n", "account_only": True}),
        ({"action": "link", "note": "n", "device": " M1 "}, "link", {"note": "n", "device": "M1"}),
        ({"action": "reset"}, "reset", {"note": ""}),
    ],
)
def test_action_form(fields, action, body):
    asked = action_form(fields)
    assert (asked.action, asked.body, asked.problem) == (action, body, None)


def test_action_form_refuses_unknown_buttons():
    assert action_form({"action": "preapprove", "note": "n"}).problem is not None
    assert action_form({}).problem is not None


def test_bulk_form_carries_the_filter_typed():
    form = {"action": "block", "note": "n", "filter.linked": "false", "filter.user": "bob"}
    asked = bulk_form({**form, "filter.evil": "x", "filter.state": " "}, dry_run=True)
    assert asked.body == {
        "note": "n",
        "dry_run": True,
        "filter": {"linked": False, "user": "bob"},
    }
    assert "all" not in asked.body


def test_bulk_form_all_only_without_a_filter():
    asked = bulk_form({"action": "reset", "note": "n", "all": "true"}, dry_run=False)
    assert asked.body == {"note": "n", "dry_run": False, "all": True}
    both = bulk_form(
        {"action": "reset", "note": "n", "all": "true", "filter.user": "x"}, dry_run=False
    )
    assert both.body["filter"] == {"user": "x"} and "all" not in both.body
    assert bulk_form({"action": "link", "note": "n"}, dry_run=True).problem is not None


def test_changed_preferences_sends_only_differences():
    route, _ = find_route("PUT", "/api/preferences")
    current = {
        "auto_block_unregistered": False,
        "max_devices_per_mailbox": None,
        "max_mailboxes_per_device": 2,
        "refusal_style": "status",
    }
    form = {
        "auto_block_unregistered": "false",
        "max_devices_per_mailbox": "",
        "max_mailboxes_per_device": "3",
        "refusal_style": "http403",
        "note": "why",
    }
    body = changed_preferences(form, current, route.body or {})
    assert body == {"max_mailboxes_per_device": 3, "refusal_style": "http403", "note": "why"}
    cleared = changed_preferences(
        {"max_mailboxes_per_device": "", "use_file.refusal_style": "true", "refusal_style": "x"},
        current,
        route.body or {},
    )
    assert cleared == {"max_mailboxes_per_device": None, "use_file": ["refusal_style"]}
    assert changed_preferences({"note": "n"}, current, route.body or {}) == {}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/devices?owner=a", "/devices?owner=a"),
        ("/", "/"),
        ("//evil.example/", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("/x\r\nSet-Cookie: a=b", "/"),
        (None, "/"),
        ("/" + "a" * 3000, "/"),
    ],
)
def test_next_after_signin_stays_on_the_console(raw, expected):
    assert local_next(raw) == expected
