"""The compliance vocabulary: kinds, known spellings, free text kept as detail."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentry.compliance import (
    MAX_VIOLATION_DETAIL,
    VIOLATION_SPELLINGS,
    Violation,
    ViolationKind,
    violation_from_text,
)
from sentry.model import Device


@pytest.mark.parametrize(
    ("text", "kind", "detail"),
    [
        ("compromised", ViolationKind.COMPROMISED, ""),
        ("  Compromised ", ViolationKind.COMPROMISED, ""),
        ("jailbroken", ViolationKind.COMPROMISED, "jailbroken"),
        ("OS version", ViolationKind.OS_VERSION, ""),
        ("os-version", ViolationKind.OS_VERSION, ""),
        ("OS too old", ViolationKind.OS_VERSION, "OS too old"),
        ("out_of_contact", ViolationKind.OUT_OF_CONTACT, ""),
        ("DEVICE_OUT_OF_CONTACT", ViolationKind.OUT_OF_CONTACT, "DEVICE_OUT_OF_CONTACT"),
        ("Data Protection", ViolationKind.PASSCODE, "Data Protection"),
        ("disallowed apps", ViolationKind.APP_POLICY, "disallowed apps"),
        ("DEVICE_ADMIN_DEACTIVE", ViolationKind.MDM_REMOVED, "DEVICE_ADMIN_DEACTIVE"),
        ("decrypted", ViolationKind.ENCRYPTION, "decrypted"),
        ("unknown", ViolationKind.OTHER, "unknown"),
        ("Facebook installed", ViolationKind.OTHER, "Facebook installed"),
    ],
)
def test_known_spellings_map_and_the_text_is_kept(text: str, kind: str, detail: str) -> None:
    assert violation_from_text(text) == Violation(ViolationKind(kind), detail)


def test_every_kind_is_its_own_spelling() -> None:
    for kind in ViolationKind:
        assert VIOLATION_SPELLINGS[kind.value] is kind
        assert violation_from_text(kind.value) == Violation(kind)


@given(st.text(max_size=2000))
def test_any_text_is_a_violation_and_nothing_is_lost(text: str) -> None:
    found = violation_from_text(text)
    assert isinstance(found.kind, ViolationKind)
    assert len(found.detail) <= MAX_VIOLATION_DETAIL and "\n" not in found.detail
    if found.kind is ViolationKind.OTHER and text.split():
        assert found.detail[:50].rstrip("…") in " ".join(text.split())


def test_details_are_one_line_and_bounded() -> None:
    v = Violation(ViolationKind.OTHER, "line one\n\tline two   ")
    assert v.detail == "line one line two" and str(v) == "other: line one line two"
    long = Violation(ViolationKind.APP_POLICY, "x" * 10_000)
    assert len(long.detail) == MAX_VIOLATION_DETAIL and long.detail.endswith("…")
    assert str(Violation(ViolationKind.PASSCODE)) == "passcode"


def test_a_device_reads_plain_strings_through_the_vocabulary() -> None:
    device = Device("d1", "alice", violations=frozenset({"passcode", "rooted"}))
    assert device.violations == {
        Violation(ViolationKind.PASSCODE),
        Violation(ViolationKind.COMPROMISED, "rooted"),
    }
    assert device.violation_kinds == {"passcode", "compromised"}
    assert sorted(device.violations)[0].kind is ViolationKind.COMPROMISED
