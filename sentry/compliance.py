"""Compliance violations as a vocabulary (L0, stdlib only; re-exported by ``model``).

Approach. A managed device is non-compliant for one or more *violations*.
Each is a ``Violation``: a kind from a closed vocabulary (``ViolationKind``)
and an optional free-text ``detail`` ("iOS 15.1 below 16.0", the app that
broke the app policy). The kinds are what EPMM and Workspace ONE report for a
device (EPMM's ``noncompliance_reasons``: COMPROMISED, OS_VERSION,
HW_VERSION, DATA_PROTECTION, POLICY_OUT_OF_DATE, DEVICE_OUT_OF_CONTACT,
APP_CONTROL and its allowed/disallowed/required forms, DEVICE_ADMIN_DEACTIVE,
LOGGED_OUT; Workspace ONE's compliance rules: compromised status, OS
version, model, passcode, encryption, device last seen, application list,
roaming, SIM card change, attestation, mobile threat defense), named once
here in lower case. ``other`` keeps what fits none of them, with the text as
its detail.

The admin API takes kinds only from ``ViolationKind`` (400 for anything
else). Free text from before the vocabulary, or from a feed that spells the
kinds its own way, goes through ``violation_from_text``: a table of known
spellings (``VIOLATION_SPELLINGS``, matched after lower-casing and turning
blanks and dashes into ``_``) gives the kind, the original text is kept as
the detail when it said more than the kind's own name, and anything unknown
becomes ``other`` with the text as detail. Nothing a device was flagged for
is lost.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "MAX_VIOLATION_DETAIL",
    "VIOLATION_SPELLINGS",
    "Violation",
    "ViolationKind",
    "violation_from_text",
]

MAX_VIOLATION_DETAIL = 500
"""Longest detail text kept (longer free text is cut, with an ellipsis)."""


class ViolationKind(StrEnum):
    """Why a managed device is not compliant (see the module comment)."""

    COMPROMISED = "compromised"  # jailbroken or rooted
    OS_VERSION = "os_version"  # OS (or security patch level) below the allowed version
    HARDWARE = "hardware"  # model or hardware revision not allowed
    PASSCODE = "passcode"  # no passcode, or one weaker than the policy (data protection)
    ENCRYPTION = "encryption"  # storage not encrypted (or decrypted)
    OUT_OF_CONTACT = "out_of_contact"  # no check-in with the MDM for too long
    POLICY_OUT_OF_DATE = "policy_out_of_date"  # the device did not take the current policy
    APP_POLICY = "app_policy"  # disallowed app installed, required app missing
    MDM_REMOVED = "mdm_removed"  # MDM profile removed / Android device admin deactivated
    ATTESTATION = "attestation"  # device integrity attestation failed
    THREAT = "threat"  # a mobile threat defense agent reports a threat
    ROAMING = "roaming"  # international roaming not allowed
    SIM_CHANGE = "sim_change"  # the SIM card was changed
    LOGGED_OUT = "logged_out"  # the user signed out of a shared device
    OTHER = "other"  # anything else: the detail says what


@dataclass(frozen=True, slots=True, order=True)
class Violation:
    """One violation: its kind and what the MDM said about it ("" for nothing)."""

    kind: ViolationKind
    detail: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", ViolationKind(self.kind))
        object.__setattr__(self, "detail", _detail(self.detail))

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.detail}" if self.detail else self.kind.value


_K = ViolationKind
VIOLATION_SPELLINGS: dict[str, ViolationKind] = {
    **{k.value: k for k in ViolationKind},
    **dict.fromkeys(
        ("jailbroken", "jailbreak", "rooted", "root", "jailbroken_or_rooted",
         "device_compromised", "compromised_device", "compromised_status"),
        _K.COMPROMISED,
    ),
    **dict.fromkeys(
        ("os", "os_too_old", "os_version_too_low", "outdated_os", "min_os_version",
         "security_patch", "security_patch_version", "patch_level"),
        _K.OS_VERSION,
    ),
    **dict.fromkeys(("hw_version", "hardware_version", "model", "device_model"), _K.HARDWARE),
    **dict.fromkeys(
        ("password", "pin", "no_passcode", "passcode_required", "data_protection"),
        _K.PASSCODE,
    ),
    **dict.fromkeys(
        ("encrypted", "not_encrypted", "unencrypted", "decrypted", "device_encryption"),
        _K.ENCRYPTION,
    ),
    **dict.fromkeys(
        ("device_out_of_contact", "last_seen", "device_last_seen", "inactive",
         "not_checked_in", "stale"),
        _K.OUT_OF_CONTACT,
    ),
    **dict.fromkeys(("policy_outdated", "outdated_policy"), _K.POLICY_OUT_OF_DATE),
    **dict.fromkeys(
        ("app_control", "apps", "application_list", "disallowed_app", "disallowed_apps",
         "disallowed_app_control", "required_app", "required_app_control",
         "allowed_app_control", "blacklisted_app", "blacklisted_apps", "denylisted_app",
         "denylisted_apps", "app_compliance"),
        _K.APP_POLICY,
    ),
    **dict.fromkeys(
        ("mdm", "mdm_disabled", "mdm_deactivated", "mdm_profile_removed", "unenrolled",
         "device_admin_deactive", "device_admin_deactivated", "device_admin_disabled"),
        _K.MDM_REMOVED,
    ),
    **dict.fromkeys(
        ("attestation_failed", "safetynet", "play_integrity", "device_integrity"),
        _K.ATTESTATION,
    ),
    **dict.fromkeys(("mtd", "threat_detected", "malware", "mobile_threat"), _K.THREAT),
    **dict.fromkeys(("international_roaming", "roaming_device"), _K.ROAMING),
    **dict.fromkeys(("sim_card_change", "sim_changed", "sim_swap"), _K.SIM_CHANGE),
    **dict.fromkeys(("user_logged_out", "signed_out"), _K.LOGGED_OUT),
    **dict.fromkeys(("unknown",), _K.OTHER),
}  # fmt: skip
"""Known spellings (normalised: lower case, blanks and dashes as ``_``) -> kind."""

_SEPARATORS = re.compile(r"[\s\-]+")


def _normal(text: str) -> str:
    return _SEPARATORS.sub("_", text.strip().casefold()).strip("_")


def _detail(text: str) -> str:
    text = " ".join(str(text).split())  # one line: no control characters, no runs of blanks
    if len(text) > MAX_VIOLATION_DETAIL:
        text = text[: MAX_VIOLATION_DETAIL - 1] + "…"
    return text


def violation_from_text(text: str) -> Violation:
    """A free-text violation as a ``Violation`` (see the module comment): a
    known spelling gives its kind (the text kept as detail when it is not
    the kind's own name), anything else is ``other`` with the text as detail."""
    key = _normal(text)
    kind = VIOLATION_SPELLINGS.get(key)
    if kind is None:
        return Violation(ViolationKind.OTHER, text)
    return Violation(kind, "" if key == kind.value else text)
