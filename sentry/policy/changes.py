"""Changes: the data the policy returns and the shell carries out.

Approach (style.md habit 2). Neither ``decide`` nor the admin operations touch
memory or disk; they return a tuple of these frozen values. The shell passes
the same tuple to ``Snapshot.apply`` (memory) and ``Store.apply`` (one
transaction), so both always agree. ``Touch`` is the only change on the hot
path of a known, unchanged association; the shell may batch and coalesce
Touches (the last ``last_seen`` per key wins) before writing them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, get_args

from sentry.model import (
    AccessRules,
    Association,
    AssociationKey,
    AuditEntry,
    Device,
    EstablishedType,
    ExchangeSetting,
    HistoryEvent,
    Label,
    Pool,
    Preferences,
    Realms,
    Routing,
    User,
)

__all__ = [
    "CHANGE_TYPES",
    "AppendAudit",
    "AppendHistory",
    "Change",
    "Changes",
    "DeleteAssociation",
    "DeleteDevice",
    "DeleteEstablished",
    "DeleteLabel",
    "DeletePool",
    "DeleteSetting",
    "DeleteUser",
    "MoveHistory",
    "PutAccessRules",
    "PutAssociation",
    "PutDevice",
    "PutEstablished",
    "PutLabel",
    "PutPool",
    "PutPreferences",
    "PutRealms",
    "PutRouting",
    "PutSetting",
    "PutUser",
    "Touch",
]


@dataclass(frozen=True, slots=True)
class PutAssociation:
    association: Association


@dataclass(frozen=True, slots=True)
class DeleteAssociation:
    key: AssociationKey


@dataclass(frozen=True, slots=True)
class Touch:
    """Only ``last_seen`` moved; ignored when the association is gone."""

    key: AssociationKey
    last_seen: float


@dataclass(frozen=True, slots=True)
class PutUser:
    user: User


@dataclass(frozen=True, slots=True)
class DeleteUser:
    principal: str


@dataclass(frozen=True, slots=True)
class PutDevice:
    device: Device


@dataclass(frozen=True, slots=True)
class DeleteDevice:
    device_id: str


@dataclass(frozen=True, slots=True)
class PutPool:
    pool: Pool


@dataclass(frozen=True, slots=True)
class DeletePool:
    name: str


@dataclass(frozen=True, slots=True)
class PutRouting:
    routing: Routing


@dataclass(frozen=True, slots=True)
class PutPreferences:
    prefs: Preferences


@dataclass(frozen=True, slots=True)
class PutSetting:
    setting: ExchangeSetting


@dataclass(frozen=True, slots=True)
class DeleteSetting:
    name: str


@dataclass(frozen=True, slots=True)
class PutLabel:
    label: Label


@dataclass(frozen=True, slots=True)
class DeleteLabel:
    name: str


@dataclass(frozen=True, slots=True)
class PutRealms:
    """The realms the stored principals are canonical under (re-keyed at start
    when the configuration changes them)."""

    realms: Realms


@dataclass(frozen=True, slots=True)
class PutAccessRules:
    """The device access rules, the whole ordered list (``sentry.policy.access_rules``)."""

    rules: AccessRules


@dataclass(frozen=True, slots=True)
class PutEstablished:
    established: EstablishedType


@dataclass(frozen=True, slots=True)
class DeleteEstablished:
    scope: str


@dataclass(frozen=True, slots=True)
class MoveHistory:
    """Re-key one association's history (its row was re-keyed or merged)."""

    old: AssociationKey
    new: AssociationKey


@dataclass(frozen=True, slots=True)
class AppendAudit:
    entry: AuditEntry


@dataclass(frozen=True, slots=True)
class AppendHistory:
    key: AssociationKey
    event: HistoryEvent


Change = (
    PutAssociation
    | DeleteAssociation
    | Touch
    | PutUser
    | DeleteUser
    | PutDevice
    | DeleteDevice
    | PutPool
    | DeletePool
    | PutRouting
    | PutPreferences
    | PutSetting
    | DeleteSetting
    | PutLabel
    | DeleteLabel
    | PutRealms
    | PutAccessRules
    | PutEstablished
    | DeleteEstablished
    | MoveHistory
    | AppendAudit
    | AppendHistory
)
"""Every kind of change; ``Store.apply`` and ``Snapshot.apply`` accept exactly these."""

Changes = tuple[Change, ...]

CHANGE_TYPES: frozenset[type[Any]] = frozenset(get_args(Change))
"""The change classes, for validating a change list before applying any of it."""
