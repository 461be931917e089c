"""The entity tables of a ``Snapshot``: the current value of every entity.

Approach. ``EntityTables`` holds one map (or one whole value) per entity
kind: users, managed devices, pools (with the set of their backend types),
routing, preferences, Exchange settings, labels, realms, the established
backend types (``indexes.EstablishedIndex``: the table and its by-device /
by-DeviceId views), the device access rules (``access_rules.RuleSet``: the
ordered list, compiled, with its memo), ActiveSync policies, their
assignments and the provisioning records.

It changes only through ``apply(change)``, one handler per entity ``Change``
type (``ENTITY_APPLY``); a handler returns the value it replaced when an index
needs it (the old ``Device`` of a ``PutDevice``/``DeleteDevice``), else None.
Associations and everything derived from them or from several entities
(device indexes, the alias index, the pushed-mailbox cache) are
``associations.AssociationIndexes``; ``Snapshot`` runs both parts per change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sentry.model import (
    NO_REALMS,
    NO_RULES,
    AssociationKey,
    Device,
    EasPolicy,
    ExchangeSetting,
    Label,
    PolicyAssignments,
    Pool,
    Preferences,
    ProvisionRecord,
    Realms,
    Routing,
    User,
)

from . import changes as ch
from .access_rules import RuleSet
from .indexes import EstablishedIndex

__all__ = ["ENTITY_APPLY", "EntityTables"]


class EntityTables:
    """The entity maps of a snapshot; values are immutable and shared by copies."""

    __slots__ = (
        "devices",
        "eas_policies",
        "established",
        "labels",
        "policy_assignments",
        "pools",
        "prefs",
        "provisioning",
        "realms",
        "routing",
        "rules",
        "settings",
        "types",
        "users",
    )

    def __init__(self) -> None:
        self.users: dict[str, User] = {}
        self.devices: dict[str, Device] = {}
        self.pools: dict[str, Pool] = {}
        self.types: frozenset[str] = frozenset()  # backend types of the pools
        self.routing = Routing()
        self.prefs = Preferences()
        self.settings: dict[str, ExchangeSetting] = {}
        self.labels: dict[str, Label] = {}
        self.realms: Realms = NO_REALMS
        self.established = EstablishedIndex()
        self.rules = RuleSet(NO_RULES)
        self.eas_policies: dict[str, EasPolicy] = {}
        self.policy_assignments = PolicyAssignments()
        self.provisioning: dict[AssociationKey, ProvisionRecord] = {}

    def apply(self, change: ch.Change) -> Any:
        """Apply one entity change; the replaced value an index needs, or None.
        A change that is not an entity's (associations, history) is a TypeError."""
        handler = ENTITY_APPLY.get(type(change))
        if handler is None:
            raise TypeError(f"not an entity change: {change!r}")
        return handler(self, change)

    def copy(self) -> EntityTables:
        """An independent copy (the maps are copied, their values shared)."""
        other = EntityTables()
        for name in ("users", "devices", "pools", "settings", "labels"):
            setattr(other, name, dict(getattr(self, name)))
        other.eas_policies, other.provisioning = dict(self.eas_policies), dict(self.provisioning)
        other.types, other.routing, other.prefs = self.types, self.routing, self.prefs
        other.realms, other.policy_assignments = self.realms, self.policy_assignments
        other.established = self.established.copy()
        other.rules = RuleSet(self.rules.rules)  # a fresh memo
        return other

    def state(self) -> tuple[Any, ...]:
        """Every value, comparable (``Snapshot.__eq__``)."""
        return (
            self.users,
            self.devices,
            self.pools,
            dict(self.routing.users),
            dict(self.routing.domains),
            self.routing.default,
            self.prefs,
            self.settings,
            self.labels,
            self.realms,
            self.established.state(),
            self.eas_policies,
            self.policy_assignments,
            self.provisioning,
            self.rules.rules,
        )

    # --- One method per entity change type ---

    def _put_user(self, change: ch.PutUser) -> None:
        self.users[change.user.principal] = change.user

    def _delete_user(self, change: ch.DeleteUser) -> None:
        self.users.pop(change.principal, None)

    def _put_device(self, change: ch.PutDevice) -> Device | None:
        old = self.devices.get(change.device.id)
        self.devices[change.device.id] = change.device
        return old

    def _delete_device(self, change: ch.DeleteDevice) -> Device | None:
        return self.devices.pop(change.device_id, None)

    def _put_pool(self, change: ch.PutPool) -> None:
        self.pools[change.pool.name] = change.pool
        self.types = frozenset(p.type for p in self.pools.values())

    def _delete_pool(self, change: ch.DeletePool) -> None:
        self.pools.pop(change.name, None)
        self.types = frozenset(p.type for p in self.pools.values())

    def _put_routing(self, change: ch.PutRouting) -> None:
        self.routing = change.routing

    def _put_preferences(self, change: ch.PutPreferences) -> None:
        self.prefs = change.prefs

    def _put_setting(self, change: ch.PutSetting) -> None:
        self.settings[change.setting.name] = change.setting

    def _delete_setting(self, change: ch.DeleteSetting) -> None:
        self.settings.pop(change.name, None)

    def _put_label(self, change: ch.PutLabel) -> None:
        self.labels[change.label.name] = change.label

    def _delete_label(self, change: ch.DeleteLabel) -> None:
        self.labels.pop(change.name, None)

    def _put_realms(self, change: ch.PutRealms) -> None:
        self.realms = change.realms

    def _put_access_rules(self, change: ch.PutAccessRules) -> None:
        self.rules = RuleSet(change.rules)

    def _put_established(self, change: ch.PutEstablished) -> None:
        self.established.put(change.established)

    def _delete_established(self, change: ch.DeleteEstablished) -> None:
        self.established.delete(change.scope)

    def _put_eas_policy(self, change: ch.PutEasPolicy) -> None:
        self.eas_policies[change.policy.name] = change.policy

    def _delete_eas_policy(self, change: ch.DeleteEasPolicy) -> None:
        self.eas_policies.pop(change.name, None)

    def _put_policy_assignments(self, change: ch.PutPolicyAssignments) -> None:
        self.policy_assignments = change.assignments

    def _put_provision(self, change: ch.PutProvision) -> None:
        self.provisioning[change.record.key] = change.record

    def _delete_provision(self, change: ch.DeleteProvision) -> None:
        self.provisioning.pop(change.key, None)


# Change type -> its handler; the value returned is what the indexes need to
# unindex (see ``associations.INDEX_FOLLOW``).
ENTITY_APPLY: dict[type[Any], Callable[[EntityTables, Any], Any]] = {
    ch.PutUser: EntityTables._put_user,
    ch.DeleteUser: EntityTables._delete_user,
    ch.PutDevice: EntityTables._put_device,
    ch.DeleteDevice: EntityTables._delete_device,
    ch.PutPool: EntityTables._put_pool,
    ch.DeletePool: EntityTables._delete_pool,
    ch.PutRouting: EntityTables._put_routing,
    ch.PutPreferences: EntityTables._put_preferences,
    ch.PutSetting: EntityTables._put_setting,
    ch.DeleteSetting: EntityTables._delete_setting,
    ch.PutLabel: EntityTables._put_label,
    ch.DeleteLabel: EntityTables._delete_label,
    ch.PutRealms: EntityTables._put_realms,
    ch.PutAccessRules: EntityTables._put_access_rules,
    ch.PutEstablished: EntityTables._put_established,
    ch.DeleteEstablished: EntityTables._delete_established,
    ch.PutEasPolicy: EntityTables._put_eas_policy,
    ch.DeleteEasPolicy: EntityTables._delete_eas_policy,
    ch.PutPolicyAssignments: EntityTables._put_policy_assignments,
    ch.PutProvision: EntityTables._put_provision,
    ch.DeleteProvision: EntityTables._delete_provision,
}
