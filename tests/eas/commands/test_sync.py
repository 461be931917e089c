"""Tests for sentry.eas.commands.sync."""

from __future__ import annotations

import pytest

from sentry.eas.commands.sync import SyncRequest, parse_sync
from sentry.eas.errors import BodyError
from sentry.eas.wbxml import Element, decode, encode


def a(tag: str, *content: Element | str) -> Element:
    return Element("AirSync", tag, content)


@pytest.mark.parametrize(
    ("children", "expected", "hold"),
    [
        ((a("Wait", "5"),), SyncRequest(5, None), 300),
        ((a("HeartbeatInterval", "600"),), SyncRequest(None, 600), 600),
        ((a("Wait", "5"), a("HeartbeatInterval", "900")), SyncRequest(5, 900), 900),
        ((a("Collections"),), SyncRequest(None, None), None),
        ((), SyncRequest(None, None), None),
    ],
)
def test_parse_sync(children: tuple[Element, ...], expected: SyncRequest, hold: int | None) -> None:
    request = parse_sync(decode(encode(Element("AirSync", "Sync", children))))
    assert request == expected
    assert request.hold_seconds == hold


@pytest.mark.parametrize("tag", ["Wait", "HeartbeatInterval"])
def test_bad_integer(tag: str) -> None:
    with pytest.raises(BodyError, match=tag):
        parse_sync(a("Sync", a(tag, "ten")))


def test_wrong_root() -> None:
    with pytest.raises(BodyError):
        parse_sync(Element("Ping", "Ping"))
