"""The domain model: canonical keys, routing order, coercions, immutability, exports."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

import sentry.model as model
from sentry.eas.identity import identity_from_name
from sentry.model import (
    Device,
    DeviceInformation,
    NewDeviceAccess,
    Platform,
    Preferences,
    RefusalStyle,
    Routing,
    User,
    canonical_device_id,
    canonical_principal,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("jdoe", ("jdoe", None)),
        ("CORP\\JDoe", ("jdoe", "corp")),
        ("JDoe@Corp.Example", ("jdoe", "corp.example")),
        ("CORP\\jdoe@corp.example", ("jdoe", "corp")),
        ("a\\b\\Carl", ("carl", "a\\b")),
        ("first.last@sub@corp.example", ("first.last@sub", "corp.example")),
        ("  Straße@X  ", ("strasse", "x")),
        ("CORP\\", ("", "corp")),
        ("@corp.example", ("", "corp.example")),
    ],
)
def test_canonical_principal(raw, expected):
    assert canonical_principal(raw) == expected


@given(st.text(alphabet=st.sampled_from("aB\\@ .Éß_-"), max_size=12))
def test_canonical_principal_agrees_with_the_request_parser(raw):
    identity = identity_from_name(raw)
    key, domain = canonical_principal(raw)
    if identity is None:
        assert key == ""
    else:
        assert (identity.key, identity.domain) == (key, domain)


def test_canonical_device_id():
    assert canonical_device_id(" appl1a2b ") == "APPL1A2B"


def test_routing_is_user_then_domain_then_default():
    routing = Routing(users={"vip": "p1"}, domains={"corp.example": "p2"}, default="p3")
    assert routing.pool_name("vip", "corp.example") == "p1"
    assert routing.pool_name("alice", "corp.example") == "p2"
    assert routing.pool_name("alice", "other.example") == "p3"
    assert routing.pool_name("alice", None) == "p3"
    assert Routing().pool_name("alice", "corp.example") is None


def test_user_mail_domain():
    assert User("a", email="A@Corp.Example").mail_domain == "corp.example"
    assert User("a").mail_domain is None


def test_device_information_from_an_object_or_a_mapping():
    class Parsed:
        model = "iPhone15,2"
        imei = "35"
        os = "iOS 17"

    info = DeviceInformation.of(Parsed())
    assert (info.model, info.imei, info.os, info.friendly_name) == (
        "iPhone15,2",
        "35",
        "iOS 17",
        None,
    )
    assert DeviceInformation.of({"model": "Pixel", "mobile_operator": "T"}) == DeviceInformation(
        model="Pixel", mobile_operator="T"
    )


def test_preferences_and_device_accept_the_settings_strings():
    prefs = Preferences(
        refusal_style="http403",  # type: ignore[arg-type]
        new_device_access_when_registry_unreachable="block",  # type: ignore[arg-type]
    )
    assert prefs.refusal_style is RefusalStyle.HTTP403
    assert prefs.new_device_access_when_registry_unreachable is NewDeviceAccess.BLOCK
    assert Device("d", "o", "android").platform is Platform.ANDROID  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Preferences(refusal_style="loud")  # type: ignore[arg-type]


def test_values_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        User("a").email = "x"  # type: ignore[misc]


def test_exported_members():
    assert sorted(model.__all__) == sorted(set(model.__all__))
    for name in model.__all__:
        assert getattr(model, name) is not None


def test_device_information_cleans_client_text():
    info = DeviceInformation(model="", friendly_name="Bob\x1fs\nphone", os="iOS 17")
    assert info.model is None
    assert info.friendly_name == "Bob\ufffds\ufffdphone"
    assert info.os == "iOS 17"
