"""Tests for sentry.eas.commands.settings (Settings DeviceInformation, §3.4)."""

from __future__ import annotations

import pytest

from sentry.eas.commands.settings import DeviceInformation, parse_settings_device_information
from sentry.eas.errors import BodyError
from sentry.eas.wbxml import Element, decode, encode


def s(tag: str, *content: Element | str) -> Element:
    return Element("Settings", tag, content)


def test_device_information_set() -> None:
    tree = s(
        "Settings",
        s(
            "DeviceInformation",
            s(
                "Set",
                s("Model", "SM-G991B"),
                s("IMEI", "490154203237518"),
                s("FriendlyName", "Galaxy"),
                s("OS", "Android 14"),
                s("OSLanguage", "de-DE"),
                s("PhoneNumber", "+4930123"),
                s("UserAgent", "Android-Mail/2024"),
                s("EnableOutboundSMS", "1"),
                s("MobileOperator", "Telekom"),
            ),
        ),
    )
    wire = encode(tree)
    assert wire.startswith(bytes.fromhex("03016A000012455648"))
    assert parse_settings_device_information(decode(wire)) == DeviceInformation(
        model="SM-G991B",
        imei="490154203237518",
        friendly_name="Galaxy",
        os="Android 14",
        os_language="de-DE",
        phone_number="+4930123",
        user_agent="Android-Mail/2024",
        enable_outbound_sms="1",
        mobile_operator="Telekom",
    )


def test_opaque_field_is_text() -> None:
    tree = s("Settings", s("DeviceInformation", s("Set", Element("Settings", "Model", (b"X1",)))))
    info = parse_settings_device_information(decode(encode(tree)))
    assert info == DeviceInformation(model="X1")


@pytest.mark.parametrize(
    "tree",
    [
        s("Settings"),
        s("Settings", s("Oof", s("Get"))),
        s("Settings", s("DeviceInformation")),
    ],
    ids=["empty", "other-settings", "no-set"],
)
def test_no_device_information(tree: Element) -> None:
    assert parse_settings_device_information(tree) is None


def test_wrong_root() -> None:
    with pytest.raises(BodyError):
        parse_settings_device_information(Element("Provision", "Provision"))


def test_field_over_1024_chars() -> None:
    tree = s("Settings", s("DeviceInformation", s("Set", s("OS", "o" * 1025))))
    with pytest.raises(BodyError, match="Settings:OS"):
        parse_settings_device_information(tree)
