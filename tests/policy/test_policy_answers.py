"""``policy.answer``: from a decision to the response value, without a socket."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sentry.eas import responses
from sentry.eas.request import Command
from sentry.eas.status import CommonStatus, WipeAckStatus
from sentry.model import Preferences, Reason, RefusalStyle
from sentry.policy import Refuse, Wipe, answer
from sentry.testing.conversation import Conversation

BLOCKED = Refuse(CommonStatus.DeviceIsBlockedForThisUser, frozenset({Reason.MANUAL}))
LIMIT = Refuse(CommonStatus.MaximumDevicesReached, frozenset({Reason.PER_MAILBOX_LIMIT}))


def test_refusal_carries_the_decided_status_in_the_command_page() -> None:
    assert answer(LIMIT, Command.FolderSync, "14.1") == responses.refusal(
        Command.FolderSync, "14.1", CommonStatus.MaximumDevicesReached
    )
    assert answer(BLOCKED, Command.Sync, "12.1") == responses.forbidden()


@pytest.mark.parametrize("version", ["12.1", "14.1", "16.1"])
def test_http403_style_answers_403_at_every_version(version: str) -> None:
    http403 = replace(BLOCKED, style=RefusalStyle.HTTP403)
    assert answer(http403, Command.Sync, version).status == 403


def test_wipe_directive_and_status_140() -> None:
    decision = Wipe(account_only=False)
    assert answer(decision, Command.Provision, "14.1") == responses.remote_wipe()
    assert (
        answer(decision, Command.Ping, "14.1").body
        == responses.refusal(Command.Ping, "14.1", CommonStatus.RemoteWipeRequested).body
    )


def test_the_refusal_style_travels_on_the_refusal_and_never_hides_a_wipe() -> None:
    conv = Conversation(
        prefs=Preferences(auto_block_unregistered=True, refusal_style=RefusalStyle.HTTP403)
    )
    refused = conv.request("alice", "D1").expect_refuse(129).decision
    assert isinstance(refused, Refuse) and refused.style is RefusalStyle.HTTP403
    assert answer(refused, Command.Sync, "16.1").status == 403
    conv.wipe("alice", "D1")
    wipe = conv.request("alice", "D1", "Ping", version="14.1").expect_wipe().decision
    assert isinstance(wipe, Wipe)
    assert answer(wipe, Command.Ping, "14.1").status == 200  # http403 never hides a wipe
    conv.set_prefs(refusal_style=RefusalStyle.STATUS)
    later = conv.request("bob", "D2").expect_refuse(129).decision
    assert isinstance(later, Refuse) and later.style is RefusalStyle.STATUS


def test_account_only_wipe_is_never_escalated_for_an_old_client() -> None:
    decision = Wipe(account_only=True)
    assert answer(decision, Command.Provision, "16.1") == responses.remote_wipe(account_only=True)
    refused = answer(decision, Command.Provision, "16.0")
    assert refused == responses.refusal(Command.Provision, "16.0", BLOCKED.status)


@pytest.mark.parametrize("account_only", [False, True])
@pytest.mark.parametrize("ack", list(WipeAckStatus))
def test_acknowledgements(ack: WipeAckStatus, account_only: bool) -> None:
    decision = Wipe(account_only, acknowledged=ack)
    got = answer(decision, Command.Provision, "16.1")
    assert got == responses.wipe_acknowledged(ack, account_only=account_only)
