"""The demo backend's mail store: snapshots, sync keys and the change hub."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from sentry.testing.mailbox import ChangeHub, FolderType, SyncStates, diff, new_mailbox
from sentry.testing.state import BackendConfig, BackendState

NOW = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
OWNER = ("alice", "DEV1")


def test_new_mailbox_has_the_well_known_folders_and_seeded_mail() -> None:
    box = new_mailbox("alice", "pw", "alice@example.com", "Alice", messages=2, now=NOW)
    assert [f.type for f in box.folders.values()] == [
        FolderType.Inbox,
        FolderType.Drafts,
        FolderType.DeletedItems,
        FolderType.SentItems,
        FolderType.Calendar,
        FolderType.Contacts,
    ]
    assert list(box.inbox.items) == ["1:1", "1:2"]
    assert box.inbox.items["1:1"].received < box.inbox.items["1:2"].received <= NOW


def test_diff() -> None:
    changes = diff({"a": 1, "b": 1, "c": 1}, {"a": 1, "b": 2, "d": 1})
    assert (changes.added, changes.changed, changes.deleted) == (("d",), ("b",), ("c",))
    assert len(changes) == 3 and not diff({"a": 1}, {"a": 1})


def test_sync_keys_keep_the_current_and_the_previous_one() -> None:
    states = SyncStates()
    k1 = states.reset(OWNER, "1", {})
    k2 = states.issue(OWNER, "1", {"1:1": 1})
    assert states.lookup(OWNER, "1", k1) == {}
    k3 = states.issue(OWNER, "1", {"1:1": 2})
    assert states.lookup(OWNER, "1", k1) is None
    assert states.lookup(OWNER, "1", k2) == {"1:1": 1}
    assert states.latest(OWNER, "1") == (k3, {"1:1": 2})
    k4 = states.reset(OWNER, "1", {})
    assert k4 not in (k1, k2, k3) and states.lookup(OWNER, "1", k3) is None
    assert states.latest(("alice", "OTHER"), "1") is None


async def test_hub_wakes_only_matching_waiters_and_everyone_on_close() -> None:
    hub = ChangeHub()
    with (
        hub.watch("alice", frozenset({"1"})) as inbox,
        hub.watch("alice", frozenset({"4"})) as sent,
    ):
        assert hub.held == 2
        assert hub.notify("alice", "1") == 1 and hub.notify("bob", "1") == 0
        await inbox.wait(1)
        assert inbox.changed == ["1"] and not sent.event.is_set()
        hub.close()
        await sent.wait(1)
        assert sent.closed and not sent.changed
    assert hub.held == 0
    with hub.watch("alice", frozenset({"1"})) as late:
        assert late.closed and late.event.is_set()


async def test_waiter_times_out() -> None:
    with ChangeHub().watch("alice", frozenset({"1"})) as waiter:
        started = asyncio.get_running_loop().time()
        await waiter.wait(0.05)
        assert asyncio.get_running_loop().time() - started >= 0.04


def test_state_finds_mailboxes_by_name_or_email() -> None:
    state = BackendState(BackendConfig())
    alice = state.mailbox("alice")
    assert state.find("ALICE@example.com") is alice
    assert state.find("CORP\\Alice") is alice
    assert state.authenticate("alice", "secret") is alice
    assert state.authenticate("alice", "nope") is None
    with pytest.raises(KeyError):
        state.mailbox("mallory")


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        BackendConfig(min_heartbeat=0)
    with pytest.raises(ValueError):
        BackendConfig(mailboxes=(("a", "p", "a@x", "A"), ("A", "p", "a2@x", "A2")))
    config = BackendConfig(mailboxes=(("carol", "pw", "carol@x.test", "Carol"),))
    assert config.mailboxes[0].email == "carol@x.test"
