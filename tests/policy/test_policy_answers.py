"""``policy.answer``: from a decision to the response value, without a socket."""

from __future__ import annotations

import pytest

from sentry.eas import responses
from sentry.eas.request import Command
from sentry.eas.status import CommonStatus, WipeAckStatus
from sentry.model import Reason, RefusalStyle
from sentry.policy import Refuse, Wipe, answer

BLOCKED = Refuse(CommonStatus.DeviceIsBlockedForThisUser, frozenset({Reason.MANUAL}))
LIMIT = Refuse(CommonStatus.MaximumDevicesReached, frozenset({Reason.PER_MAILBOX_LIMIT}))


def test_refusal_carries_the_decided_status_in_the_command_page() -> None:
    assert answer(LIMIT, Command.FolderSync, "14.1") == responses.refusal(
        Command.FolderSync, "14.1", CommonStatus.MaximumDevicesReached
    )
    assert answer(BLOCKED, Command.Sync, "12.1") == responses.forbidden()


@pytest.mark.parametrize("version", ["12.1", "14.1", "16.1"])
def test_http403_style_answers_403_at_every_version(version: str) -> None:
    assert answer(BLOCKED, Command.Sync, version, style=RefusalStyle.HTTP403).status == 403


def test_wipe_directive_and_status_140() -> None:
    decision = Wipe(account_only=False)
    assert answer(decision, Command.Provision, "14.1") == responses.remote_wipe()
    assert (
        answer(decision, Command.Ping, "14.1").body
        == responses.refusal(Command.Ping, "14.1", CommonStatus.RemoteWipeRequested).body
    )
    # the http403 style never hides a wipe
    assert answer(decision, Command.Ping, "14.1", style=RefusalStyle.HTTP403).status == 200


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
