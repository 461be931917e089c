"""What the gateway imposes on devices beyond the decision table's own rows:
device access rules (Exchange ABQ's rules, ``sentry.policy.access_rules``) and
the ActiveSync policies it provisions itself (``sentry.policy.easpolicy``).

Approach. Plain frozen values like the rest of ``sentry.model``, which
re-exports every name here: callers import them from ``sentry.model``. They
depend on nothing in the model but ``AssociationKey`` (by annotation only), so
they live apart to keep ``model.py`` one screenful per concern.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sentry.model import AssociationKey

__all__ = [
    "NO_RULES",
    "AccessRule",
    "AccessRules",
    "EasPolicy",
    "PolicyAssignments",
    "ProvisionRecord",
    "RuleAction",
    "RuleField",
    "RuleMatch",
    "association_ref",
]


# --- Device access rules ---


class RuleField(StrEnum):
    """What a device access rule looks at (``sentry.policy.access_rules``)."""

    DEVICE_TYPE = "device_type"  # the DeviceType query parameter
    MODEL = "model"  # Settings DeviceInformation Model
    OS = "os"  # Settings DeviceInformation OS
    USER_AGENT = "user_agent"  # the User-Agent header (else DeviceInformation's)
    PROTOCOL_VERSION = "protocol_version"  # MS-ASProtocolVersion, "major.minor"


class RuleMatch(StrEnum):
    """How a device access rule compares its value with the field."""

    EQUALS = "equals"  # text: case-insensitive; version: the same major.minor
    PREFIX = "prefix"  # text only, case-insensitive
    GLOB = "glob"  # text only: ``*`` any run, ``?`` one character, case-insensitive
    LT = "lt"  # version only: below
    LE = "le"
    GT = "gt"
    GE = "ge"


class RuleAction(StrEnum):
    """What a matching device access rule does (Exchange ABQ's access levels)."""

    ALLOW = "allow"
    BLOCK = "block"
    QUARANTINE = "quarantine"


@dataclass(frozen=True, slots=True)
class AccessRule:
    """One device access rule (Exchange's ABQ rule): when ``field`` matches
    ``value`` by ``match``, the association gets ``action``. ``name`` is the
    rule's unique id; ``note``/``actor``/``at`` record who created it and why.
    Checked by ``sentry.policy.access_rules.check_rule`` before it is stored."""

    name: str
    field: RuleField
    match: RuleMatch
    value: str
    action: RuleAction
    note: str = ""
    actor: str = ""
    at: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "field", RuleField(self.field))
        object.__setattr__(self, "match", RuleMatch(self.match))
        object.__setattr__(self, "action", RuleAction(self.action))


@dataclass(frozen=True, slots=True)
class AccessRules:
    """The device access rules in evaluation order (the first match decides)."""

    rules: tuple[AccessRule, ...] = ()

    def __len__(self) -> int:
        return len(self.rules)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def get(self, name: str) -> AccessRule | None:
        """The rule called ``name``, or None."""
        return next((r for r in self.rules if r.name == name), None)

    def index(self, name: str) -> int | None:
        """The 0-based position of the rule called ``name``, or None."""
        return next((i for i, r in enumerate(self.rules) if r.name == name), None)


NO_RULES = AccessRules()


# --- ActiveSync policies the gateway enforces itself ---


@dataclass(frozen=True, slots=True)
class EasPolicy:
    """A named ActiveSync policy: EASProvisionDoc settings (element name, integer
    value), sorted by name and validated by ``sentry.eas.policydoc.check_settings``.

    ``allow_non_provisionable``: a device that acknowledges with "partially
    applied" or "not applied" is accepted (Exchange's AllowNonProvisionableDevices);
    off, it is answered 139 DeviceNotFullyProvisionable.
    """

    name: str
    settings: tuple[tuple[str, int], ...] = ()
    description: str = ""
    allow_non_provisionable: bool = False


def association_ref(key: AssociationKey) -> str:
    """``DEVICEID/principal``: an association as one string (DeviceIds have no '/')."""
    return f"{key.device_id}/{key.user}"


@dataclass(frozen=True)
class PolicyAssignments:
    """Which named policy applies where: per association (``DEVICEID/principal``),
    per user (principal), per label, and the default (None: the backend's own).
    Resolution for a device: ``sentry.policy.easpolicy.device_policy``."""

    default: str | None = None
    users: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    associations: Mapping[str, str] = field(default_factory=dict)

    def names(self) -> set[str]:
        """Every policy name assigned anywhere."""
        found = {*self.users.values(), *self.labels.values(), *self.associations.values()}
        return found | ({self.default} if self.default else set())


@dataclass(frozen=True, slots=True)
class ProvisionRecord:
    """The provisioning state of one association while the gateway enforces a policy.

    ``policy``/``digest``: the policy and content the device was (or is being)
    provisioned with. ``pending``: the temporary key of an initial answer not
    yet acknowledged; ``issued``: the final key the device holds. ``backend_key``:
    the final key of the backend's own Provision, which the gateway ran on the
    device's behalf (None: the backend asked for none) and substitutes for
    ``issued`` on every forwarded request.
    """

    key: AssociationKey
    policy: str
    digest: str
    at: float
    pending: int | None = None
    issued: int | None = None
    backend_key: int | None = None
