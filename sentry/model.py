"""The domain model (design.md §3): frozen values, standard library only.

Approach. Everything the gateway knows is one of these immutable values; a
change of state is a new value (``dataclasses.replace``), never a mutation, so
the policy can compare "before" and "after" and emit only what changed.

- ``User`` and ``Device`` are the registry side (EPMM, LDAP, local entries);
  a device's compliance is a set of ``Violation`` values (a kind of the
  ``ViolationKind`` vocabulary and a free-text detail, ``sentry.compliance``).
- ``Association`` is one row of the ActiveSync list, keyed by
  ``AssociationKey(device_id, user)``: the canonical EAS DeviceId (upper-case)
  and the canonical mailbox principal (``canonical_principal`` under the
  configured ``Realms``, see ``sentry.principals``). It is built to be held a
  million times in memory: slotted, no per-row dicts, the rare parts
  (override, DeviceInformation) as optional sub-values.
- ``EstablishedType`` records the one backend type a device is on.
- ``Pool``/``Routing`` route a mailbox to a backend; ``Preferences`` are the
  operator's switches; ``ExchangeSetting``/``Label`` push extra mailboxes to
  devices (resolved by ``sentry.policy.templates.resolve_pushed_mailboxes``).
- ``AuditEntry`` (who did what to which row) and ``HistoryEvent`` (what
  happened to one association) are append-only records.

Enums are ``StrEnum`` so they serialise as their value and compare to text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, NamedTuple

from .compliance import Violation, ViolationKind, violation_from_text
from .devicepolicy import (
    NO_RULES,
    AccessRule,
    AccessRules,
    EasPolicy,
    PolicyAssignments,
    ProvisionRecord,
    RuleAction,
    RuleField,
    RuleMatch,
    association_ref,
)
from .principals import NO_REALMS, Realm, Realms, canonical_principal, principal_domain

__all__ = [
    "BACKEND_TYPES",
    "DEFAULT_SETTING_PRIORITY",
    "NO_REALMS",
    "NO_RULES",
    "THROWAWAY_DEVICE_IDS",
    "AccessRule",
    "AccessRules",
    "Association",
    "AssociationKey",
    "AuditEntry",
    "Device",
    "DeviceInformation",
    "EasPolicy",
    "EstablishedType",
    "ExchangeSetting",
    "HistoryEvent",
    "Label",
    "NewDeviceAccess",
    "Override",
    "OverrideKind",
    "Platform",
    "PolicyAssignments",
    "Pool",
    "Preferences",
    "ProvisionRecord",
    "Realm",
    "Realms",
    "Reason",
    "RefusalStyle",
    "Routing",
    "RuleAction",
    "RuleField",
    "RuleMatch",
    "UnlinkCause",
    "User",
    "UserSource",
    "Verdict",
    "Violation",
    "ViolationKind",
    "WipeStatus",
    "association_ref",
    "canonical_device_id",
    "canonical_principal",
    "principal_domain",
    "violation_from_text",
]


def canonical_device_id(raw: str) -> str:
    """An EAS DeviceId in its canonical form: stripped and upper-cased."""
    return raw.strip().upper()


THROWAWAY_DEVICE_IDS: frozenset[str] = frozenset({"VALIDATE", "WEBSERVICE"})
"""Canonical DeviceIds that many phones share (account validation, eas-protocol.md
§6.2): their associations are listed and blockable, but never counted for limits
nor establishing a backend type."""


# --- Vocabulary ---


class UserSource(StrEnum):
    LOCAL = "local"
    LDAP = "ldap"


class Platform(StrEnum):
    IOS = "ios"
    ANDROID = "android"
    WINDOWS = "windows"
    OTHER = "other"


class UnlinkCause(StrEnum):
    """Why an association is not linked to a managed device (design.md §4)."""

    DEVICE_UNKNOWN = "device_unknown"
    USER_UNKNOWN = "user_unknown"
    NOT_ENTITLED = "not_entitled"


class OverrideKind(StrEnum):
    ALLOW = "allow"
    BLOCK = "block"
    WIPE = "wipe"


class WipeStatus(StrEnum):
    NONE = "none"
    PENDING = "pending"  # the next request gets the wipe
    WIPED = "wiped"  # the client acknowledged success; only Remove applies
    FAILED = "failed"  # the client reported failure; the wipe is repeated


class Verdict(StrEnum):
    """The kind of the last decision stored on an association."""

    FORWARD = "forward"
    REFUSE = "refuse"
    WIPE = "wipe"


class Reason(StrEnum):
    """Reason codes of the decision table (design.md §4), in table order."""

    WIPE = "WIPE"
    NO_BACKEND = "NO_BACKEND"
    MIXED_BACKEND = "MIXED_BACKEND"
    MANUAL = "MANUAL"
    RULE_BLOCK = "RULE_BLOCK"  # a device access rule blocks (``Association.access_rule``)
    QUARANTINE = "QUARANTINE"  # a device access rule quarantines
    RULE_ALLOW = "RULE_ALLOW"  # a device access rule allows (beats AUTO_BLOCK only)
    COMPLIANCE = "COMPLIANCE"
    AUTO_BLOCK = "AUTO_BLOCK"
    PER_MAILBOX_LIMIT = "PER_MAILBOX_LIMIT"
    PER_DEVICE_LIMIT = "PER_DEVICE_LIMIT"
    REGISTRY_UNREACHABLE = "REGISTRY_UNREACHABLE"


class RefusalStyle(StrEnum):
    STATUS = "status"  # EAS status in the body where the protocol allows it
    HTTP403 = "http403"


class NewDeviceAccess(StrEnum):
    ALLOW = "allow"
    BLOCK = "block"


BACKEND_TYPES: tuple[str, ...] = ("exchange", "office365", "gmail", "traveler", "other")
"""Backend types the gateway knows; ``Pool.type`` may name others."""

DEFAULT_SETTING_PRIORITY = 100
"""An Exchange setting's priority when none is given (1 applies first)."""


# --- Registry side ---


@dataclass(frozen=True, slots=True)
class User:
    """A directory entry; ``principal`` is canonical (see ``canonical_principal``).

    The user's known names are the principal, the email address and ``aliases``
    (canonical principals): a request or an admin naming any of them means this
    user (``Snapshot.principal_of``). ``missing_since``: an LDAP user the
    directory sync no longer finds (flagged by the ``mark`` and ``block``
    removal actions), since when; None for every other user.
    """

    principal: str
    email: str = ""
    display_name: str = ""
    source: UserSource = UserSource.LOCAL
    custom1: str | None = None
    custom2: str | None = None
    custom3: str | None = None
    custom4: str | None = None
    aliases: frozenset[str] = frozenset()
    missing_since: float | None = None
    mail_domain: str | None = field(default=None, init=False, repr=False, compare=False)
    """The domain of ``email``, lower-cased (derived; routing reads it per request)."""
    known_cache: tuple[Realms, frozenset[str]] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    """Memo of ``policy.indexes.known_names`` (the realms it was computed under and
    the names): a directory sync computes them in its worker thread, the snapshot
    reuses them (not data: never stored or compared)."""

    def __post_init__(self) -> None:
        address = canonical_principal(self.email) if self.email else None
        object.__setattr__(
            self, "mail_domain", None if address is None else principal_domain(address)
        )


@dataclass(frozen=True, slots=True)
class Device:
    """A managed device; ``eas_ids`` are canonical EAS DeviceIds (upper-case).

    ``violations``: why it is not compliant (a plain string given here is read
    by ``violation_from_text``: a known spelling, else ``other`` with the text).
    """

    id: str
    owner: str
    platform: Platform = Platform.OTHER
    eas_ids: frozenset[str] = frozenset()
    compliant: bool = True
    violations: frozenset[Violation] = frozenset()
    labels: frozenset[str] = frozenset()
    retired: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "platform", Platform(self.platform))
        if any(not isinstance(v, Violation) for v in self.violations):
            found = frozenset(
                v if isinstance(v, Violation) else violation_from_text(str(v))
                for v in self.violations
            )
            object.__setattr__(self, "violations", found)

    @property
    def violation_kinds(self) -> frozenset[str]:
        """The kinds of the violations (what a decision records and lists filter on)."""
        return frozenset(v.kind.value for v in self.violations)


@dataclass(frozen=True, slots=True)
class ExchangeSetting:
    """An Exchange account pushed to devices; templates use ``$VARIABLE$``s.

    ``priority`` is EPMM's Exchange App Priority: where a device can take only
    some settings (Android), the lower numbers apply first (then the name).
    """

    name: str
    user_name: str
    email: str
    server: str = ""
    priority: int = DEFAULT_SETTING_PRIORITY


@dataclass(frozen=True, slots=True)
class Label:
    """A set of devices and the Exchange settings applied to them."""

    name: str
    settings: frozenset[str] = frozenset()
    devices: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Pool:
    """A backend pool: ``type`` is a backend type such as ``exchange``."""

    name: str
    type: str
    servers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Routing:
    """Mailbox -> pool: explicit per user, then per mail domain, then default."""

    users: Mapping[str, str] = field(default_factory=dict)
    domains: Mapping[str, str] = field(default_factory=dict)
    default: str | None = None

    def pool_name(self, user: str, domain: str | None) -> str | None:
        """The pool routing ``user`` (canonical) whose mail domain is ``domain``."""
        name = self.users.get(user)
        if name is None and domain is not None:
            name = self.domains.get(domain)
        return self.default if name is None else name


@dataclass(frozen=True, slots=True)
class Preferences:
    """The operator's switches (design.md §3).

    ``compliance_overrides_allow``: a non-compliant managed device is refused
    even where an admin allowed the association (off: Allow wins, as on
    Ivanti). ``admin_set``: the names of the preferences an administrator set;
    those win over the configuration file at start (``sentry.policy.prefs``).
    """

    auto_block_unregistered: bool = False
    max_devices_per_mailbox: int | None = None
    max_mailboxes_per_device: int | None = None
    refusal_style: RefusalStyle = RefusalStyle.STATUS
    new_device_access_when_registry_unreachable: NewDeviceAccess = NewDeviceAccess.ALLOW
    compliance_overrides_allow: bool = False
    admin_set: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "admin_set", frozenset(self.admin_set))
        # Accept the settings file's plain strings ("http403", "block") as well.
        object.__setattr__(self, "refusal_style", RefusalStyle(self.refusal_style))
        access = NewDeviceAccess(self.new_device_access_when_registry_unreachable)
        object.__setattr__(self, "new_device_access_when_registry_unreachable", access)


# --- The ActiveSync list ---


class AssociationKey(NamedTuple):
    """(canonical EAS DeviceId, canonical mailbox principal)."""

    device_id: str
    user: str


@dataclass(frozen=True, slots=True)
class DeviceInformation:
    """Settings DeviceInformation (MS-ASCMD 2.2.3.45); field names as the parser's."""

    model: str | None = None
    imei: str | None = None
    friendly_name: str | None = None
    os: str | None = None
    os_language: str | None = None
    phone_number: str | None = None
    user_agent: str | None = None
    enable_outbound_sms: str | None = None
    mobile_operator: str | None = None

    def __post_init__(self) -> None:
        # Client-supplied display text: "" means absent, and control characters
        # (no place in a display string; the store uses one as a separator) are
        # replaced by U+FFFD.
        for name in _INFO_FIELDS:
            value = getattr(self, name)
            if value is not None and (not value or not value.isprintable()):
                object.__setattr__(self, name, _CONTROL.sub("\ufffd", value) or None)

    @classmethod
    def of(cls, source: object) -> DeviceInformation:
        """Copy from any object with these attributes, or from a mapping."""
        get = source.get if isinstance(source, Mapping) else _attr_getter(source)
        values = {name: get(name) for name in _INFO_FIELDS}
        return cls(**{k: None if v is None else str(v) for k, v in values.items()})


_INFO_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(DeviceInformation))
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _attr_getter(source: object) -> Any:
    return lambda name: getattr(source, name, None)


@dataclass(frozen=True, slots=True)
class Override:
    """An administrator's decision on one association.

    ``pre_approved``: an Allow given before the device's first request (the
    association was created by the admin; Exchange's personal exemption).
    """

    kind: OverrideKind
    note: str
    actor: str
    at: float
    account_only: bool = False  # wipe only: AccountOnlyRemoteWipe where possible
    pre_approved: bool = False


@dataclass(frozen=True, slots=True)
class Association:
    """One row of the ActiveSync list (see the module comment for the layout).

    ``device``/``unlinked``: the linked managed device, or why there is none.
    ``verdict``/``reasons``/``violations``/``pool``/``backend_type``: the last
    decision. The routing domain follows from the key (``principal_domain``):
    no request can change it. ``verified_at``: when the backend first accepted
    a forwarded request of this row; None while it is *unverified* (only 401s
    so far, or never forwarded), which is never counted for limits nor
    establishing a device's backend type. A row an admin pre-approved has not
    been seen yet: ``last_seen`` is 0.0 (``never_seen``) and ``first_seen`` is
    the time of the approval. ``access_rule``: the name of the device access
    rule that matched at the last decision (its reason is RULE_ALLOW,
    RULE_BLOCK or QUARANTINE), None when none did.
    """

    key: AssociationKey
    device_type: str = ""
    user_agent: str | None = None
    protocol_version: str | None = None
    device_info: DeviceInformation | None = None
    first_seen: float = 0.0
    last_seen: float = 0.0
    device: str | None = None
    unlinked: UnlinkCause | None = UnlinkCause.DEVICE_UNKNOWN
    manual_link: str | None = None
    override: Override | None = None
    verdict: Verdict = Verdict.FORWARD
    reasons: frozenset[Reason] = frozenset()
    violations: frozenset[str] = frozenset()
    pool: str | None = None
    backend_type: str | None = None
    wipe: WipeStatus = WipeStatus.NONE
    policy_fingerprint: str | None = None
    ambiguous_policy: bool = False
    verified_at: float | None = None
    access_rule: str | None = None

    @property
    def throwaway(self) -> bool:
        """Whether the DeviceId is one many phones share (``THROWAWAY_DEVICE_IDS``)."""
        return self.key.device_id in THROWAWAY_DEVICE_IDS

    @property
    def counted(self) -> bool:
        """Whether the row counts for the limits (verified, not a throwaway DeviceId)."""
        return self.verified_at is not None and self.key.device_id not in THROWAWAY_DEVICE_IDS

    @property
    def never_seen(self) -> bool:
        """Pre-approved by an admin, no request from the device yet."""
        return self.last_seen == 0.0


@dataclass(frozen=True, slots=True)
class EstablishedType:
    """The backend type a device is established on (design.md §4 row 3).

    ``scope`` is ``device:<managed device id>`` for a registered device (all
    its EAS DeviceIds) or ``eas:<DeviceId>`` for an unregistered DeviceId.
    ``key`` is the association whose first accepted request set it (None when
    an administrator set it, with ``actor`` and ``note``). It stays when that
    association is removed; it goes when the device has no association left
    or an administrator resets it.
    """

    scope: str
    backend_type: str
    at: float
    key: AssociationKey | None = None
    actor: str | None = None
    note: str = ""


# --- Append-only records ---


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """Who changed what, when and why; ``before``/``after`` are small dicts."""

    at: float
    actor: str
    action: str
    target: str
    note: str
    before: Mapping[str, Any] | None = None
    after: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    """Something that happened to one association (first sight, decision, wipe...)."""

    at: float
    kind: str
    detail: Mapping[str, Any] = field(default_factory=dict)
