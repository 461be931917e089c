"""Remembered policy fingerprints of Provision answers (``fingerprints.py``): for any
body the answer is the one the full path (decode, then ``policy_fingerprint``)
gives, and answers that differ only before the policy document are named from
memory."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentry.eas.commands import policy_fingerprint
from sentry.eas.commands.fingerprints import MEMO_BODY_LIMIT, AnswerFingerprints, data_key
from sentry.eas.errors import EasError
from sentry.eas.wbxml import Element, Limits, decode, encode

LIMITS = Limits(max_size=1024 * 1024)
NS = "Provision"


def leaf(tag: str, text: str | None = None, ns: str = NS) -> Element:
    return Element(ns, tag, () if text is None else (text,))


def doc(settings_: dict[str, str]) -> Element:
    return Element(NS, "EASProvisionDoc", tuple(leaf(k, v) for k, v in settings_.items()))


DEVICE_INFORMATION = Element("Settings", "DeviceInformation", (leaf("Status", "1", "Settings"),))


def answer(
    key: str, policy: Element, *, before: tuple[Element, ...] = (), top: tuple[Element, ...] = ()
) -> bytes:
    """A Provision answer as a backend sends it: a new temporary key each time
    (``before``: more elements in Policy before the Data; ``top``: in Provision
    before Status, as 14.1's answer to a DeviceInformation)."""
    inner = (*before, leaf("PolicyType", "MS-EAS-Provisioning-WBXML"), leaf("Status", "1"),
             leaf("PolicyKey", key), Element(NS, "Data", (policy,)))  # fmt: skip
    body = (*top, leaf("Status", "1"), Element(NS, "Policies", (Element(NS, "Policy", inner),)))
    return encode(Element(NS, "Provision", body))


def reference(body: bytes) -> str | type[EasError] | None:
    try:
        return policy_fingerprint(decode(body, LIMITS))
    except EasError:
        return EasError


def remembered(names: AnswerFingerprints, body: bytes) -> str | type[EasError] | None:
    try:
        return names.of(body)
    except EasError:
        return EasError


STRICT = doc({"DevicePasswordEnabled": "1", "MinDevicePasswordLength": "6"})
LOOSE = doc({"DevicePasswordEnabled": "0"})


def test_answers_that_differ_before_the_policy_are_named_from_memory() -> None:
    names = AnswerFingerprints(LIMITS)
    first, second = answer("1111", STRICT), answer("22222222", STRICT)
    assert names.of(first) == reference(first) and names.hits == 0
    assert names.of(second) == reference(second) == reference(first) and names.hits == 1
    other = answer("3333", LOOSE)  # another policy: its own name, computed
    assert names.of(other) == reference(other) != reference(first) and names.hits == 1
    before = (leaf("PolicyType", "x"),)  # a leaf before the path's next element: still the key
    assert names.of(answer("4", STRICT, before=before)) == reference(first)
    # 14.1's answer to a DeviceInformation (another page, nested), a wipe element, a
    # string in another page: the same policy bytes, named from memory
    for extra in (
        {"top": (DEVICE_INFORMATION,)},
        {"before": (Element(NS, "RemoteWipe", (leaf("Status", "1"),)),)},
        {"before": (leaf("Status", "1", ns="AirSync"),)},
    ):
        assert names.of(answer("5", STRICT, **extra)) == reference(first)  # type: ignore[arg-type]
    assert names.hits == 5


def test_unusual_shapes_take_the_full_path() -> None:
    usual = answer("1", STRICT, top=(DEVICE_INFORMATION,))
    assert data_key(usual) is not None
    empty_data = encode(Element(NS, "Provision", (Element(NS, "Policies", (Element(NS, "Policy", (
        leaf("PolicyKey", "1"), Element(NS, "Data"))),)),)))  # fmt: skip
    opaque = answer("1", STRICT, before=(Element(NS, "Status", (b"\x01",)),))
    no_data = encode(Element(NS, "Provision", (leaf("Status", "2"),)))
    # another namespace's Data before the Provision one: find("Data") takes it
    other_data = answer("1", STRICT, before=(leaf("Data", "x", ns="AirSyncBase"),))
    deep = leaf("Status", "1")
    for _ in range(5):
        deep = Element(NS, "RemoteWipe", (deep,))
    too_deep = answer("1", STRICT, before=(deep,))
    not_provision = encode(Element("Ping", "Ping", (leaf("Status", "1", ns="Ping"),)))
    shapes = (empty_data, opaque, no_data, other_data, too_deep, not_provision)
    for body in (*shapes, b"", b"\x03\x01j\x00"):
        assert data_key(body) is None
        names = AnswerFingerprints(LIMITS)
        names.of(usual)  # the memory holds the usual answer's policy
        assert remembered(names, body) == reference(body) == remembered(names, body)
        assert names.hits == 0


def test_no_memory_under_limits_an_answer_could_reach_or_over_its_size() -> None:
    body = answer("1", STRICT)
    tight = AnswerFingerprints(Limits(max_size=1024 * 1024, max_elements=1000))
    assert tight.of(body) == tight.of(body) == reference(body) and tight.hits == 0
    big = answer("1", doc({"DevicePasswordEnabled": "1" * MEMO_BODY_LIMIT}))
    names = AnswerFingerprints(LIMITS)
    assert names.of(big) == names.of(big) == reference(big) and names.hits == 0


_TEXT = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")  # STR_I can carry
_TAGS = ("Status", "PolicyType", "RemoteWipe", "DevicePasswordEnabled", "AllowCamera")
_SETTINGS = st.dictionaries(
    st.sampled_from(("DevicePasswordEnabled", "AllowCamera", "MaxAttachmentSize", "AllowWiFi")),
    st.text(_TEXT, max_size=8),
    max_size=4,
)


@settings(max_examples=200, deadline=None)
@given(
    answers=st.lists(
        st.tuples(
            st.text(_TEXT, max_size=12),
            st.lists(
                st.tuples(st.sampled_from(_TAGS), st.none() | st.text(_TEXT, max_size=6)),
                max_size=3,
            ),
            _SETTINGS,
        ),
        min_size=1,
        max_size=6,
    )
)
def test_every_answer_is_named_as_the_full_path_names_it(
    answers: list[tuple[str, list[tuple[str, str | None]], dict[str, str]]],
) -> None:
    names = AnswerFingerprints(LIMITS, size=4)  # small: the memory is also cleared
    for key, before, policy in answers:
        siblings = tuple(leaf(t, v) for t, v in before)
        body = answer(key, doc(policy), before=siblings, top=(DEVICE_INFORMATION,) * (len(key) % 2))
        assert remembered(names, body) == reference(body)


@settings(max_examples=500, deadline=None)
@given(
    flips=st.lists(
        st.tuples(st.integers(0, 80) | st.integers(0, 400), st.integers(0, 255)),
        min_size=1,
        max_size=3,
    ),
    cut=st.none() | st.integers(0, 400),
)
def test_a_damaged_answer_is_named_as_the_full_path_names_it(
    flips: list[tuple[int, int]], cut: int | None
) -> None:
    """The memory holds the undamaged answer's name; any damage, before the
    policy or in it, gives what the full path gives (a name, None or an error)."""
    names = AnswerFingerprints(LIMITS)
    original = answer(
        "123456", STRICT, before=(leaf("PolicyType", "A"),), top=(DEVICE_INFORMATION,)
    )
    names.of(original)
    body = bytearray(original)
    for at, value in flips:
        body[at % len(body)] = value
    damaged = bytes(body if cut is None else body[: cut % (len(body) + 1)])
    assert remembered(names, damaged) == reference(damaged)


def test_a_token_no_page_defines_is_left_to_the_limits() -> None:
    """Under ``allow_unknown=False`` an unknown token before the policy is an error,
    whatever the memory holds for the policy's bytes."""
    strict = Limits(max_size=1024 * 1024, allow_unknown=False)
    names = AnswerFingerprints(strict)
    assert names.of(answer("1", STRICT)) == reference(answer("1", STRICT))
    unknown = answer("2", STRICT, before=(leaf("Unknown_3C", "x"),))
    assert reference(unknown) == reference(answer("1", STRICT))  # the default limits keep it
    with pytest.raises(EasError):
        names.of(unknown)
    assert names.hits == 0
