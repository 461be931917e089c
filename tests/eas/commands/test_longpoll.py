"""Tests for sentry.eas.commands.longpoll."""

from __future__ import annotations

import pytest

from sentry.eas.commands import long_poll_seconds
from sentry.eas.errors import BodyError
from sentry.eas.request import Command
from sentry.eas.wbxml import Element

PING = Element("Ping", "Ping", (Element("Ping", "HeartbeatInterval", ("480",)),))
SYNC_WAIT = Element("AirSync", "Sync", (Element("AirSync", "Wait", ("10",)),))
SYNC_HB = Element("AirSync", "Sync", (Element("AirSync", "HeartbeatInterval", ("1200",)),))
FOLDER_SYNC = Element("FolderHierarchy", "FolderSync")


@pytest.mark.parametrize(
    ("command", "body", "seconds"),
    [
        (Command.Ping, PING, 480),
        (Command.Ping, Element("Ping", "Ping"), None),
        (Command.Ping, None, None),
        (Command.Sync, SYNC_WAIT, 600),
        (Command.Sync, SYNC_HB, 1200),
        (Command.Sync, None, None),
        (Command.FolderSync, FOLDER_SYNC, None),
        (None, None, None),
    ],
)
def test_long_poll_seconds(
    command: Command | None, body: Element | None, seconds: int | None
) -> None:
    assert long_poll_seconds(command, body) == seconds


def test_body_of_the_wrong_command() -> None:
    with pytest.raises(BodyError):
        long_poll_seconds(Command.Ping, SYNC_WAIT)
