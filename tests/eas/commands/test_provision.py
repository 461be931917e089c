"""Tests for sentry.eas.commands.provision (eas-protocol.md §3, §7 vectors 7 and 8)."""

from __future__ import annotations

import pytest

from sentry.eas.commands.provision import (
    ProvisionKind,
    ProvisionRequest,
    WipeKind,
    parse_provision,
)
from sentry.eas.commands.settings import DeviceInformation
from sentry.eas.errors import BodyError
from sentry.eas.wbxml import Element, decode, encode

VECTOR_7 = bytes.fromhex(
    "03016A00000E45464748034D532D5741502D50726F766973696F6E696E672D584D4C0001010101"
)
VECTOR_8 = bytes.fromhex(
    "03016A00000E45464748034D532D4541532D50726F766973696F6E696E672D5742584D4C0001010101"
)
EMPTY_PROVISION = bytes.fromhex("03016A00000E05")


def p(tag: str, *content: Element | str) -> Element:
    return Element("Provision", tag, content)


def s(tag: str, *content: Element | str) -> Element:
    return Element("Settings", tag, content)


def policy(*content: Element) -> Element:
    return p("Provision", p("Policies", p("Policy", *content)))


def test_vector_7_initial_2_5() -> None:
    request = parse_provision(decode(VECTOR_7))
    assert request == ProvisionRequest(ProvisionKind.INITIAL, policy_type="MS-WAP-Provisioning-XML")


def test_vector_8_initial_12_to_14() -> None:
    request = parse_provision(decode(VECTOR_8))
    assert request.kind is ProvisionKind.INITIAL
    assert request.policy_type == "MS-EAS-Provisioning-WBXML"
    assert request.device_information is None
    assert encode(policy(p("PolicyType", "MS-EAS-Provisioning-WBXML"))) == VECTOR_8


def test_initial_14_1_with_device_information() -> None:
    info = s(
        "DeviceInformation",
        s(
            "Set",
            s("Model", "iPhone15,2"),
            s("IMEI", "356938035643809"),
            s("FriendlyName", "Jo's iPhone"),
            s("OS", "iOS 17.4"),
            s("OSLanguage", "English"),
            s("PhoneNumber", "+15551234567"),
            s("UserAgent", "Apple-iPhone15C2/2104.1"),
            s("EnableOutboundSMS", "0"),
            s("MobileOperator", "Carrier"),
        ),
    )
    tree = p(
        "Provision",
        info,
        p("Policies", p("Policy", p("PolicyType", "MS-EAS-Provisioning-WBXML"))),
    )
    wire = encode(tree)
    assert wire.startswith(bytes.fromhex("03016A00000E450012564857"))  # Provision, DI, Set, Model
    request = parse_provision(decode(wire))
    assert request.kind is ProvisionKind.INITIAL
    assert request.policy_type == "MS-EAS-Provisioning-WBXML"
    assert request.device_information == DeviceInformation(
        model="iPhone15,2",
        imei="356938035643809",
        friendly_name="Jo's iPhone",
        os="iOS 17.4",
        os_language="English",
        phone_number="+15551234567",
        user_agent="Apple-iPhone15C2/2104.1",
        enable_outbound_sms="0",
        mobile_operator="Carrier",
    )


def test_device_information_partial() -> None:
    tree = p("Provision", s("DeviceInformation", s("Set", s("Model", "Pixel 8"), s("OS"))))
    request = parse_provision(decode(encode(tree)))
    assert request.kind is ProvisionKind.INITIAL
    assert request.policy_type is None
    assert request.device_information == DeviceInformation(model="Pixel 8")


def test_acknowledgement() -> None:
    tree = policy(
        p("PolicyType", "MS-EAS-Provisioning-WBXML"),
        p("PolicyKey", "1307199584"),
        p("Status", "1"),
    )
    request = parse_provision(decode(encode(tree)))
    assert request == ProvisionRequest(
        ProvisionKind.ACKNOWLEDGE,
        policy_type="MS-EAS-Provisioning-WBXML",
        policy_key=1307199584,
        policy_status=1,
    )


def test_acknowledgement_with_key_only() -> None:
    request = parse_provision(policy(p("PolicyKey", "5")))
    assert (request.kind, request.policy_key, request.policy_status) == (
        ProvisionKind.ACKNOWLEDGE,
        5,
        None,
    )


@pytest.mark.parametrize(
    ("kind", "status", "succeeded"),
    [
        (WipeKind.FULL, "1", True),
        (WipeKind.FULL, "2", False),
        (WipeKind.ACCOUNT_ONLY, "1", True),
        (WipeKind.ACCOUNT_ONLY, "2", False),
    ],
)
def test_wipe_acknowledgement(kind: WipeKind, status: str, succeeded: bool) -> None:
    tree = p("Provision", p(kind.value, p("Status", status)))
    request = parse_provision(decode(encode(tree)))
    assert request.kind is ProvisionKind.WIPE_ACK
    assert (request.wipe, request.wipe_status) == (kind, int(status))
    assert request.wipe_succeeded is succeeded


def test_full_wipe_wins_over_account_only() -> None:
    tree = p(
        "Provision",
        p("AccountOnlyRemoteWipe", p("Status", "1")),
        p("RemoteWipe", p("Status", "1")),
    )
    assert parse_provision(tree).wipe is WipeKind.FULL


def test_empty_provision() -> None:
    request = parse_provision(decode(EMPTY_PROVISION))
    assert request == ProvisionRequest(ProvisionKind.EMPTY)


BAD = [
    pytest.param(Element("AirSync", "Sync"), "Provision:Provision", id="wrong-root"),
    pytest.param(Element("Settings", "Provision"), "Provision:Provision", id="wrong-namespace"),
    pytest.param(policy(p("PolicyKey", "abc")), "PolicyKey", id="key-not-integer"),
    pytest.param(policy(p("PolicyKey", "4294967296")), "32 bits", id="key-too-big"),
    pytest.param(policy(p("PolicyKey", "1"), p("Status", "-1")), "Status", id="status-negative"),
    pytest.param(p("Provision", p("RemoteWipe")), "no Status", id="wipe-no-status"),
    pytest.param(
        p("Provision", p("RemoteWipe", p("Status", "yes"))), "Status", id="wipe-status-text"
    ),
    pytest.param(
        p("Provision", s("DeviceInformation", s("Set", s("Model", "x" * 1025)))),
        "1025",
        id="model-too-long",
    ),
]


@pytest.mark.parametrize(("tree", "fragment"), BAD)
def test_malformed(tree: Element, fragment: str) -> None:
    with pytest.raises(BodyError) as info:
        parse_provision(tree)
    assert fragment in info.value.message


def test_1024_chars_is_the_limit() -> None:
    tree = p("Provision", s("DeviceInformation", s("Set", s("FriendlyName", "x" * 1024))))
    info = parse_provision(tree).device_information
    assert info is not None
    assert info.friendly_name == "x" * 1024
