"""The EASProvisionDoc (MS-ASPROV 2.2.2.27) and the gateway's own Provision answers.

Approach. A policy is a mapping from EASProvisionDoc element names (the spec's
names, as in ``codepages`` page 14) to integers; booleans are 0/1. ``FIELDS``
is the one table of what each setting may hold (habit 3): a closed range, or
an explicit set of values. ``check_settings`` validates what an administrator
gives (``ValueError`` naming the field and its bounds); ``decode_provision_doc``
reads a document off the wire (``BodyError`` for anything the table does not
allow), ``encode_provision_doc`` writes one for a protocol version, leaving out
the settings the version does not know (the code-page version notes), in token
order. ``settings_digest`` names a policy's content: a device provisioned with
one content must provision again when it changes.

The application lists (``UnapprovedInROMApplicationList``,
``ApprovedApplicationList``) are not supported: they are lists of hashes, not
settings, and no client of this gateway's users enforces them.

The Provision answers the gateway gives when it enforces a policy itself
(MS-ASPROV 3.2.5.1): the initial answer (``Status 1``, the policy with a
temporary key and the document, and ``settings:DeviceInformation/Status`` when
the request carried DeviceInformation), the acknowledgement's answer (the
final key) and the failures (``policy_status`` for a Policy-level status such
as 5 WrongPolicyKey, ``provision_status`` for a top-level status such as 2
ProtocolError or 139 DeviceNotFullyProvisionable).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from .codepages import PAGE_BY_NAMESPACE
from .errors import BodyError
from .responses import SERVER_HEADERS, WBXML_CONTENT_TYPE, Response
from .versions import at_least
from .wbxml import Element, encode

__all__ = [
    "FIELDS",
    "POLICY_TYPE",
    "WAP_POLICY_TYPE",
    "Field",
    "Settings",
    "check_settings",
    "decode_provision_doc",
    "encode_provision_doc",
    "policy_acknowledged",
    "policy_response",
    "policy_status",
    "provision_status",
    "settings_digest",
]

NAMESPACE = "Provision"
POLICY_TYPE = "MS-EAS-Provisioning-WBXML"
WAP_POLICY_TYPE = "MS-WAP-Provisioning-XML"  # protocol 2.5: not served by the gateway
_MAX_UINT = 0x7FFFFFFF

Settings = tuple[tuple[str, int], ...]
"""A policy's settings: (EASProvisionDoc element name, value), sorted by name."""


@dataclass(frozen=True, slots=True)
class Field:
    """What one setting may hold: ``low..high``, or one of ``values``."""

    low: int
    high: int
    values: frozenset[int] | None = None
    boolean: bool = False

    def allows(self, value: int) -> bool:
        if self.values is not None:
            return value in self.values
        return self.low <= value <= self.high

    def describe(self) -> str:
        if self.boolean:
            return "a boolean (true/false or 0/1)"
        if self.values is not None:
            return "one of " + ", ".join(map(str, sorted(self.values)))
        return f"an integer from {self.low} to {self.high}"


_BOOL = Field(0, 1, boolean=True)


def _range(low: int, high: int) -> Field:
    return Field(low, high)


FIELDS: Mapping[str, Field] = {
    "DevicePasswordEnabled": _BOOL,
    "AlphanumericDevicePasswordRequired": _BOOL,
    "RequireStorageCardEncryption": _BOOL,
    "PasswordRecoveryEnabled": _BOOL,
    "AttachmentsEnabled": _BOOL,
    "MinDevicePasswordLength": _range(1, 16),  # 2.2.2.38
    "MaxInactivityTimeDeviceLock": _range(0, 9999),  # seconds; 9999: no limit (2.2.2.34)
    "MaxDevicePasswordFailedAttempts": _range(4, 16),  # 2.2.2.33
    "MaxAttachmentSize": _range(0, _MAX_UINT),  # bytes (2.2.2.30)
    "AllowSimpleDevicePassword": _BOOL,
    "DevicePasswordExpiration": _range(0, 9999),  # days; 0: never (2.2.2.20)
    "DevicePasswordHistory": _range(0, 50),  # 2.2.2.21
    "AllowStorageCard": _BOOL,
    "AllowCamera": _BOOL,
    "RequireDeviceEncryption": _BOOL,
    "AllowUnsignedApplications": _BOOL,
    "AllowUnsignedInstallationPackages": _BOOL,
    "MinDevicePasswordComplexCharacters": _range(1, 4),  # 2.2.2.37
    "AllowWiFi": _BOOL,
    "AllowTextMessaging": _BOOL,
    "AllowPOPIMAPEmail": _BOOL,
    "AllowBluetooth": _range(0, 2),  # 0 off, 1 hands-free only, 2 on
    "AllowIrDA": _BOOL,
    "RequireManualSyncWhenRoaming": _BOOL,
    "AllowDesktopSync": _BOOL,
    "MaxCalendarAgeFilter": Field(
        0, 7, frozenset({0, 4, 5, 6, 7})
    ),  # 0 all, 4 2 weeks .. 7 6 months
    "AllowHTMLEmail": _BOOL,
    "MaxEmailAgeFilter": _range(0, 5),  # 0 all, 1 1 day .. 5 1 month
    "MaxEmailBodyTruncationSize": _range(-1, _MAX_UINT),  # KB; -1 no truncation
    "MaxEmailHTMLBodyTruncationSize": _range(-1, _MAX_UINT),
    "RequireSignedSMIMEMessages": _BOOL,
    "RequireEncryptedSMIMEMessages": _BOOL,
    "RequireSignedSMIMEAlgorithm": _range(0, 1),  # 0 SHA1, 1 MD5
    "RequireEncryptionSMIMEAlgorithm": _range(0, 4),  # TripleDES, DES, RC2 128/64/40
    "AllowSMIMEEncryptionAlgorithmNegotiation": _range(0, 2),
    "AllowSMIMESoftCerts": _BOOL,
    "AllowBrowser": _BOOL,
    "AllowConsumerEmail": _BOOL,
    "AllowRemoteDesktop": _BOOL,
    "AllowInternetSharing": _BOOL,
}
"""Every supported EASProvisionDoc setting and the values it may hold."""

_TOKENS = PAGE_BY_NAMESPACE[NAMESPACE].by_name
_ORDER = {name: _TOKENS[name].value for name in FIELDS}  # the document lists them in token order


def check_settings(given: Mapping[str, object]) -> Settings:
    """Validated settings from an administrator's mapping; ``ValueError`` naming
    the first field that is unknown or out of bounds. Booleans may be given as
    ``true``/``false``."""
    out: dict[str, int] = {}
    for name, raw in given.items():
        field = FIELDS.get(name)
        if field is None:
            raise ValueError(f"unknown policy setting {name!r} (see the README's list)")
        value = _as_int(name, raw, field)
        if not field.allows(value):
            raise ValueError(f"{name} must be {field.describe()}, got {raw!r}")
        out[name] = value
    return tuple(sorted(out.items()))


def _as_int(name: str, raw: object, field: Field) -> int:
    if isinstance(raw, bool):
        if not field.boolean:
            raise ValueError(f"{name} must be {field.describe()}, got {raw!r}")
        return int(raw)
    if not isinstance(raw, int):
        raise ValueError(f"{name} must be {field.describe()}, got {raw!r}")
    return raw


@functools.lru_cache(maxsize=1024)
def settings_digest(settings: Settings) -> str:
    """A short stable name of a policy's content (changes when any value does);
    memoised: the request path asks for it on every request of a device a
    policy applies to."""
    text = json.dumps(list(settings), separators=(",", ":"))
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:16]


def encode_provision_doc(settings: Settings, version: str | None) -> Element:
    """``<EASProvisionDoc>`` with the settings ``version`` knows, in token order."""
    known = [(name, value) for name, value in settings if _since_ok(name, version)]
    known.sort(key=lambda item: _ORDER[item[0]])
    children = tuple(Element(NAMESPACE, name, (str(value),)) for name, value in known)
    return Element(NAMESPACE, "EASProvisionDoc", children)


def _since_ok(name: str, version: str | None) -> bool:
    since = _TOKENS[name].since or "2.5"
    major, minor = (int(p) for p in since.split("."))
    return version is None or at_least(version, major, minor)


def decode_provision_doc(doc: Element) -> Settings:
    """The settings of an ``<EASProvisionDoc>``; ``BodyError`` for an unknown
    element, a non-integer, a value out of bounds or a repeated setting."""
    if (doc.namespace, doc.tag) != (NAMESPACE, "EASProvisionDoc"):
        raise BodyError(f"expected Provision:EASProvisionDoc, got {doc.namespace}:{doc.tag}")
    out: dict[str, int] = {}
    for child in doc.children:
        field = FIELDS.get(child.tag) if child.namespace == NAMESPACE else None
        if field is None:
            raise BodyError(f"EASProvisionDoc: unsupported element {child.namespace}:{child.tag}")
        if child.tag in out:
            raise BodyError(f"EASProvisionDoc: {child.tag} appears twice")
        text = (child.text or "").strip()
        try:
            value = int(text, 10) if len(text) <= 11 else None
        except ValueError:
            value = None
        if value is None or not field.allows(value):
            raise BodyError(f"EASProvisionDoc: {child.tag} {text[:20]!r} is not {field.describe()}")
        out[child.tag] = value
    return tuple(sorted(out.items()))


# --- the gateway's Provision answers -------------------------------------------------

_HEADERS = (*SERVER_HEADERS, ("Content-Type", WBXML_CONTENT_TYPE))


def _leaf(tag: str, value: object, namespace: str = NAMESPACE) -> Element:
    return Element(namespace, tag, (str(value),))


def _answer(*children: Element) -> Response:
    return Response(200, _HEADERS, encode(Element(NAMESPACE, "Provision", children)))


def policy_response(
    key: int, settings: Settings, version: str | None, *, device_information: bool = False
) -> Response:
    """The answer to an initial request: the policy with temporary key ``key``."""
    policy = Element(
        NAMESPACE,
        "Policy",
        (
            _leaf("PolicyType", POLICY_TYPE),
            _leaf("Status", 1),
            _leaf("PolicyKey", key),
            Element(NAMESPACE, "Data", (encode_provision_doc(settings, version),)),
        ),
    )
    head: tuple[Element, ...] = ()
    if device_information:
        head = (Element("Settings", "DeviceInformation", (_leaf("Status", 1, "Settings"),)),)
    return _answer(*head, _leaf("Status", 1), Element(NAMESPACE, "Policies", (policy,)))


def policy_acknowledged(key: int) -> Response:
    """The answer to an acknowledgement: the final key."""
    policy = Element(
        NAMESPACE,
        "Policy",
        (_leaf("PolicyType", POLICY_TYPE), _leaf("Status", 1), _leaf("PolicyKey", key)),
    )
    return _answer(_leaf("Status", 1), Element(NAMESPACE, "Policies", (policy,)))


def policy_status(policy_type: str, status: int) -> Response:
    """Provision Status 1 with a Policy-level failure (3 unknown type, 5 wrong key)."""
    policy = Element(
        NAMESPACE, "Policy", (_leaf("PolicyType", policy_type), _leaf("Status", status))
    )
    return _answer(_leaf("Status", 1), Element(NAMESPACE, "Policies", (policy,)))


def provision_status(status: int) -> Response:
    """A top-level Provision failure (2 protocol error, 139, 145 ...)."""
    return _answer(_leaf("Status", status))
