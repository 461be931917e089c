"""Tests for sentry.eas.commands.ping."""

from __future__ import annotations

import pytest

from sentry.eas.commands.ping import PingRequest, parse_ping
from sentry.eas.errors import BodyError
from sentry.eas.wbxml import Element, decode, encode


def g(tag: str, *content: Element | str) -> Element:
    return Element("Ping", tag, content)


def folder(folder_id: str) -> Element:
    return g("Folder", g("Id", folder_id), g("Class", "Email"))


def test_heartbeat_and_folders() -> None:
    tree = g("Ping", g("HeartbeatInterval", "480"), g("Folders", folder("1"), folder("2")))
    wire = encode(tree)
    assert wire.startswith(bytes.fromhex("03016A00000D45480334383000"))
    assert parse_ping(decode(wire)) == PingRequest(heartbeat_interval=480, folder_count=2)


def test_folders_only() -> None:
    assert parse_ping(g("Ping", g("Folders", folder("1")))) == PingRequest(None, 1)


def test_heartbeat_only() -> None:
    assert parse_ping(g("Ping", g("HeartbeatInterval", " 3540 "))) == PingRequest(3540, 0)


@pytest.mark.parametrize("value", ["abc", "", "-5", "1.5", "99999999999", "٣"])
def test_bad_heartbeat(value: str) -> None:
    with pytest.raises(BodyError, match="HeartbeatInterval"):
        parse_ping(g("Ping", g("HeartbeatInterval", value)))


def test_wrong_root() -> None:
    with pytest.raises(BodyError, match="Ping:Ping"):
        parse_ping(Element("AirSync", "Sync"))
