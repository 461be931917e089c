"""The EASProvisionDoc codec, the gateway's Provision answers and the base64
query's policy-key rewrite (sentry.eas.policydoc, sentry.eas._b64query)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentry.eas._b64query import decode_base64_query, with_command, with_policy_key
from sentry.eas.commands import ProvisionKind, parse_provision
from sentry.eas.errors import BodyError
from sentry.eas.policydoc import (
    FIELDS,
    check_settings,
    decode_provision_doc,
    encode_provision_doc,
    policy_acknowledged,
    policy_response,
    settings_digest,
)
from sentry.eas.wbxml import Element, decode, encode

# eas-protocol.md §7 vector 8: the 12.0-14.0 initial Provision request.
INITIAL_14 = bytes.fromhex(
    "03016A00000E45464748034D532D4541532D50726F766973696F6E696E672D5742584D4C0001010101"
)
# eas-protocol.md §7 vector 2: base64 query with policy key 1234567890.
QUERY = "jRIJBAZBQkMxMjME0gKWSQZpUGhvbmUIEGpkb2VAZXhhbXBsZS5jb20HAQE="


def _value(field_name: str) -> st.SearchStrategy[int]:
    spec = FIELDS[field_name]
    if spec.values is not None:
        return st.sampled_from(sorted(spec.values))
    return st.integers(spec.low, spec.high)


valid_settings = st.lists(st.sampled_from(sorted(FIELDS)), unique=True, max_size=12).flatmap(
    lambda names: st.tuples(*(st.tuples(st.just(n), _value(n)) for n in names)).map(
        lambda pairs: tuple(sorted(pairs))
    )
)


def test_one_setting_encodes_to_the_token_bytes() -> None:
    doc = encode_provision_doc((("DevicePasswordEnabled", 1),), "14.1")
    # SWITCH_PAGE 14, EASProvisionDoc (0x0D|0x40), DevicePasswordEnabled (0x0E|0x40) "1"
    assert encode(doc) == bytes.fromhex("03016A00000E4D4E03310001" + "01")


def test_settings_a_version_does_not_know_are_left_out_in_token_order() -> None:
    settings = check_settings({"AllowCamera": False, "DevicePasswordEnabled": True})
    old = encode_provision_doc(settings, "12.0")
    assert [c.tag for c in old.children] == ["DevicePasswordEnabled"]  # AllowCamera is 12.1
    new = encode_provision_doc(settings, "16.1")
    assert [c.tag for c in new.children] == ["DevicePasswordEnabled", "AllowCamera"]


@given(valid_settings)
def test_round_trip(settings: tuple[tuple[str, int], ...]) -> None:
    doc = decode(encode(Element("Provision", "Provision", (encode_provision_doc(settings, None),))))
    assert decode_provision_doc(doc.children[0]) == settings


@given(
    st.lists(
        st.tuples(st.sampled_from([*sorted(FIELDS)[:5], "Unknown", "Data"]), st.text(max_size=12)),
        max_size=5,
    )
)
def test_any_document_decodes_or_is_a_body_error(children: list[tuple[str, str]]) -> None:
    doc = Element(
        "Provision", "EASProvisionDoc", tuple(Element("Provision", t, (v,)) for t, v in children)
    )
    try:
        settings = decode_provision_doc(doc)
    except BodyError:
        return
    assert all(FIELDS[name].allows(value) for name, value in settings)


@pytest.mark.parametrize(
    ("given_settings", "problem"),
    [
        ({"MinDevicePasswordLength": 0}, "MinDevicePasswordLength must be an integer from 1 to 16"),
        ({"AllowCamera": 2}, "AllowCamera must be a boolean"),
        ({"MaxEmailAgeFilter": True}, "MaxEmailAgeFilter must be an integer from 0 to 5"),
        ({"MaxCalendarAgeFilter": 3}, "one of 0, 4, 5, 6, 7"),
        ({"Nope": 1}, "unknown policy setting 'Nope'"),
    ],
)
def test_check_settings_names_the_field_and_its_bounds(
    given_settings: dict[str, object], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        check_settings(given_settings)


def test_digest_follows_the_content() -> None:
    a = check_settings({"MinDevicePasswordLength": 6})
    assert settings_digest(a) == settings_digest(check_settings({"MinDevicePasswordLength": 6}))
    assert settings_digest(a) != settings_digest(check_settings({"MinDevicePasswordLength": 7}))


def test_initial_request_vector_and_answers() -> None:
    request = parse_provision(decode(INITIAL_14))
    assert (request.kind, request.policy_type) == (
        ProvisionKind.INITIAL,
        "MS-EAS-Provisioning-WBXML",
    )
    answer = decode(policy_response(42, (("AllowCamera", 0),), "14.0").body)
    policy = answer.find_path("Policies", "Policy")
    assert policy is not None and answer.child_text("Status") == "1"
    assert (policy.child_text("Status"), policy.child_text("PolicyKey")) == ("1", "42")
    data = policy.find_path("Data", "EASProvisionDoc")
    assert data is not None and decode_provision_doc(data) == (("AllowCamera", 0),)
    ack = decode(policy_acknowledged(7).body)
    assert ack.find_path("Policies", "Policy", "PolicyKey").text == "7"  # type: ignore[union-attr]


@pytest.mark.parametrize("key", [None, 0, 1, 0xFFFFFFFF])
def test_base64_query_key_rewrite_keeps_everything_else(key: int | None) -> None:
    before = decode_base64_query(QUERY)
    after = decode_base64_query(with_policy_key(QUERY, key))
    assert after.policy_key == key
    assert (after.device_id, after.device_type, after.user, after.params) == (
        before.device_id,
        before.device_type,
        before.user,
        before.params,
    )


blobs = st.builds(
    lambda device, key, dtype, user: (
        bytes([141, 9, 9, 4, len(device)])
        + device
        + (b"\x00" if key is None else b"\x04" + key.to_bytes(4, "little"))
        + bytes([len(dtype)])
        + dtype
        + bytes([8, len(user)])
        + user
    ),
    st.binary(min_size=1, max_size=40),
    st.none() | st.integers(0, 2**32 - 1),
    st.text("abcXYZ09", min_size=1, max_size=20).map(str.encode),
    st.text("abc@.", min_size=1, max_size=30).map(str.encode),
)


@given(blobs, st.none() | st.integers(0, 2**32 - 1))
def test_any_base64_query_gets_its_key_and_command_replaced_and_nothing_else(
    blob: bytes, key: int | None
) -> None:
    query = base64.b64encode(blob).decode("ascii")
    before = decode_base64_query(query)
    after = decode_base64_query(with_command(with_policy_key(query, key), 20))
    assert (after.policy_key, after.command_code) == (key, 20)
    assert (after.device_id, after.device_type, after.user, after.locale) == (
        before.device_id,
        before.device_type,
        before.user,
        before.locale,
    )
