"""The domain model: canonical keys, routing order, coercions, immutability, exports.

(The principal rule has its own tests: ``tests/test_principals.py``.)"""

from __future__ import annotations

import dataclasses

import pytest

import sentry.model as model
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
)


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


def test_throwaway_and_counted_rows():
    from sentry.model import Association, AssociationKey

    row = Association(AssociationKey("VALIDATE", "alice"))
    assert row.throwaway and not row.counted
    assert not Association(AssociationKey("DEV1", "alice")).counted  # unverified
    verified = Association(AssociationKey("DEV1", "alice"), verified_at=1.0)
    assert verified.counted and not verified.throwaway
    assert not dataclasses.replace(row, verified_at=1.0).counted  # throwaway: never counted
