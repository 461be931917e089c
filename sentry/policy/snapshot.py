"""The in-memory state the policy decides against, with its indexes.

Approach. A ``Snapshot`` holds the current value of everything (users,
devices, pools, routing, preferences, settings, labels, associations ...)
and a few indexes so that every lookup on the request path costs O(1) or
O(mailboxes on the device), never a scan. It is composed of two parts:

- the entity tables (``entities.EntityTables``): one map or value per entity
  kind, including the established backend types (``established_for``: one
  dict probe) and the device access rules, compiled, with a memo from a
  device's facts to the first matching rule (``rule_for``: one dict probe);
- the association indexes (``associations.AssociationIndexes``): the
  associations per EAS DeviceId and DeviceIds per mailbox
  (``table.AssociationTable``: a lookup by key is one dict probe and a scan
  of that device's few rows, with counts per list state), the managed device
  of each EAS DeviceId and the devices of each owner, the alias index (every
  known name of a user -> its principal, so ``principal_of`` is one dict
  probe) and the pushed-mailbox cache.

``Snapshot`` is the surface callers use: the entity maps read as attributes
(``snapshot.users``, ``snapshot.prefs`` ...), the lookups as methods. It
changes only through ``apply(changes)``, the same change list the store
writes in one transaction, so memory and disk cannot drift apart: each change
goes to the entity tables, then to the indexes that follow it. History and
audit records are not kept here (they are store queries).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from sentry.model import (
    NO_REALMS,
    NO_RULES,
    AccessRule,
    AccessRules,
    Association,
    AssociationKey,
    Device,
    EasPolicy,
    EstablishedType,
    ExchangeSetting,
    Label,
    PolicyAssignments,
    Pool,
    Preferences,
    ProvisionRecord,
    Realms,
    Routing,
    User,
    canonical_principal,
    principal_domain,
)
from sentry.store.base import AssociationState

from . import changes as ch
from .access_rules import RuleSet, facts_of
from .associations import INDEX_FOLLOW, AssociationIndexes
from .entities import ENTITY_APPLY, EntityTables
from .templates import PushedMailboxes

__all__ = ["Snapshot"]


def _entity(name: str, doc: str) -> property:
    return property(attrgetter(f"tables.{name}"), doc=f"The entity tables' ``{name}``: {doc}.")


class Snapshot:
    """Everything the gateway knows, indexed for the request path.

    Composed of the entity tables (``tables``: ``entities.EntityTables``) and
    the association indexes (``indexes``: ``associations.AssociationIndexes``).
    The entity maps read as attributes (``users``, ``devices``, ``pools``,
    ``routing``, ``prefs``, ``settings``, ``labels``, ``realms``,
    ``eas_policies``, ``policy_assignments``, ``provisioning``): read-only,
    they change only through ``apply``."""

    __slots__ = ("indexes", "tables")

    if TYPE_CHECKING:
        users: dict[str, User]
        devices: dict[str, Device]
        pools: dict[str, Pool]
        routing: Routing
        prefs: Preferences
        settings: dict[str, ExchangeSetting]
        labels: dict[str, Label]
        realms: Realms
        eas_policies: dict[str, EasPolicy]
        policy_assignments: PolicyAssignments
        provisioning: dict[AssociationKey, ProvisionRecord]
    else:  # C-level getters: these are read on the request path
        users = _entity("users", "registered users by principal")
        devices = _entity("devices", "managed devices by id")
        pools = _entity("pools", "backend pools by name")
        routing = _entity("routing", "the routing of principals to pools")
        prefs = _entity("prefs", "the gateway preferences")
        settings = _entity("settings", "Exchange settings by name")
        labels = _entity("labels", "labels by name")
        realms = _entity("realms", "the realms names are canonical under")
        eas_policies = _entity("eas_policies", "ActiveSync policies by name")
        policy_assignments = _entity("policy_assignments", "which ActiveSync policy applies")
        provisioning = _entity("provisioning", "provisioning records by association key")

    def __init__(self) -> None:
        self.tables = EntityTables()
        self.indexes = AssociationIndexes()

    @classmethod
    def build(
        cls,
        *,
        users: Iterable[User] = (),
        devices: Iterable[Device] = (),
        pools: Iterable[Pool] = (),
        routing: Routing | None = None,
        prefs: Preferences | None = None,
        settings: Iterable[ExchangeSetting] = (),
        labels: Iterable[Label] = (),
        associations: Iterable[Association] = (),
        realms: Realms = NO_REALMS,
        established: Iterable[EstablishedType] = (),
        eas_policies: Iterable[EasPolicy] = (),
        policy_assignments: PolicyAssignments | None = None,
        provisioning: Iterable[ProvisionRecord] = (),
        access_rules: AccessRules = NO_RULES,
    ) -> Snapshot:
        """A snapshot holding the given values (tests, the store's ``load``)."""
        snap = cls()
        tables = snap.tables
        tables.realms = realms
        snap.apply(ch.PutUser(u) for u in users)
        snap.apply(ch.PutDevice(d) for d in devices)
        snap.apply(ch.PutPool(p) for p in pools)
        snap.apply(ch.PutSetting(s) for s in settings)
        snap.apply(ch.PutLabel(lb) for lb in labels)
        tables.routing = routing or Routing()
        tables.prefs = prefs or Preferences()
        snap.apply(ch.PutEstablished(e) for e in established)
        snap.apply(ch.PutEasPolicy(p) for p in eas_policies)
        tables.policy_assignments = policy_assignments or PolicyAssignments()
        snap.apply(ch.PutProvision(r) for r in provisioning)
        tables.rules = RuleSet(access_rules)
        snap.add_associations(associations)
        return snap

    # --- Reads ---

    def get(self, key: tuple[str, str]) -> Association | None:
        """The association with ``key`` (an ``AssociationKey`` or a plain pair), or None."""
        return self.indexes.table.get(key[0], key[1])

    def __contains__(self, key: object) -> bool:
        return isinstance(key, tuple) and len(key) == 2 and self.indexes.table.get(*key) is not None

    def __len__(self) -> int:
        return len(self.indexes.table)

    def keys(self) -> Iterator[AssociationKey]:
        """Every association key (no particular order)."""
        return (row.key for row in self.indexes.table)

    def associations(self) -> Iterator[Association]:
        """Every association (no particular order)."""
        return iter(self.indexes.table)

    def on_device(self, device_id: str) -> list[Association]:
        """The associations of one EAS DeviceId."""
        return self.indexes.table.on_device(device_id)

    def of_user(self, user: str) -> list[Association]:
        """The associations of one mailbox principal."""
        table = self.indexes.table
        return [row for d in table.device_ids(user) if (row := table.get(d, user)) is not None]

    def mailbox_count(self, device_id: str) -> int:
        """How many associations the EAS DeviceId has."""
        return self.indexes.table.mailbox_count(device_id)

    def device_count(self, user: str) -> int:
        """How many associations (devices) the mailbox has."""
        return self.indexes.table.device_count(user)

    def device_for_eas(self, device_id: str) -> Device | None:
        """The registered (non-retired) managed device that has this EAS DeviceId."""
        return self.indexes.eas_index.get(device_id)

    def devices_of(self, owner: str) -> set[str]:
        """Ids of the managed devices owned by ``owner``."""
        return set(self.indexes.owned.get(owner, ()))

    def manually_linked(self, device_id: str) -> set[AssociationKey]:
        """Keys an admin linked to managed device ``device_id`` (Link To)."""
        return self.indexes.table.manually_linked(device_id)

    def unverified(self) -> set[AssociationKey]:
        """Keys of the associations the backend never accepted."""
        return self.indexes.table.unverified()

    # --- Principals ---

    def principal_of(self, user: str) -> str:
        """The principal a canonical name stands for: the user whose known name
        (email, alias) it is, else the name itself."""
        return self.indexes.names.owners.get(user, user)

    def canonical(self, raw: str) -> str | None:
        """THE rule for any name given to the gateway (``canonical_principal``
        under ``realms``), then resolved through the alias index."""
        key = canonical_principal(raw, self.realms)
        return None if key is None else self.indexes.names.resolve(key)

    def names_of(self, principal: str) -> frozenset[str]:
        """A registered user's other known names (canonical)."""
        return self.indexes.names.names_of(principal)

    def alias_owner(self, name: str) -> str | None:
        """The user whose known name ``name`` is (None: no one's alias)."""
        return self.indexes.names.owner(name)

    # --- Device access rules ---

    @property
    def access_rules(self) -> AccessRules:
        """The device access rules in evaluation order."""
        return self.tables.rules.rules

    @property
    def rule_set(self) -> RuleSet:
        """The compiled rules with their memo (``access_rules.RuleSet``)."""
        return self.tables.rules

    def rule_for(self, row: Any) -> AccessRule | None:
        """The first device access rule matching what ``row``'s device said
        (DeviceType, DeviceInformation, User-Agent, protocol version), or None."""
        ruleset = self.tables.rules
        return ruleset.first(facts_of(row)) if ruleset.rules else None

    # --- Established backend types ---

    def established(self, scope: str) -> EstablishedType | None:
        """The established backend type of a scope (``device:<id>``/``eas:<DeviceId>``)."""
        return self.tables.established.get(scope)

    def established_for(self, device: Device | None, device_id: str) -> EstablishedType | None:
        """The established type that binds a row: its managed device's, else its DeviceId's."""
        if device is not None:
            return self.tables.established.by_device.get(device.id)
        return self.tables.established.by_eas.get(device_id)

    def established_types(self) -> list[EstablishedType]:
        """Every established type, ordered by scope."""
        return self.tables.established.all()

    def pushed(self, device_id: str) -> PushedMailboxes:
        """Mailboxes pushed to a managed device, with errors; cached."""
        return self.indexes.pushed(device_id, self.tables, self.canonical)

    @property
    def backend_types(self) -> frozenset[str]:
        """The backend types of the configured pools."""
        return self.tables.types

    def pool_for(self, user: str, users: Mapping[str, User] | None = None) -> Pool | None:
        """The pool routing principal ``user``: ``routing.users`` (the principal
        or one of its known names), then ``routing.domains`` by the realm of the
        user's email when registered with one, else the principal's realm, then
        the default. None: no route. Nothing a request says changes it.
        ``users`` stands for the directory (a write being checked) if given."""
        routing, known = self.routing, (self.users if users is None else users).get(user)
        name = None
        if routing.users:
            name = routing.users.get(user)
            if name is None and known is not None:
                name = next(
                    (routing.users[n] for n in sorted(self.names_of(user)) if n in routing.users),
                    None,
                )
        if name is None and routing.domains:
            mail = None if known is None else known.mail_domain
            # a principal's domain is already its realm; an email's is mapped to one
            domain = principal_domain(user) if mail is None else self.realms.domain_key(mail)
            name = None if domain is None else routing.domains.get(domain)
        if name is None:
            name = routing.default
        return None if name is None else self.pools.get(name)

    # --- Writes ---

    def apply(self, changes: Iterable[ch.Change]) -> None:
        """Apply changes in order (history and audit records are ignored): each
        to the entity tables, then to the indexes that follow it."""
        tables, indexes = self.tables, self.indexes
        for change in changes:
            step = _STEPS.get(type(change))
            if step is None:
                raise TypeError(f"not a change: {change!r}")
            entity, follow = step
            old = None if entity is None else entity(tables, change)
            if follow is not None:
                follow(indexes, change, old, tables)

    def state_counts(self) -> dict[AssociationState, int]:
        """Associations by list state (``allowed``, ``blocked``, ``wipe_pending``,
        ``wiped``), maintained incrementally (no scan)."""
        return self.indexes.table.state_counts()

    def add_associations(self, rows: Iterable[Association]) -> None:
        """Bulk insert for loading: ``PutAssociation`` for each row, without the changes."""
        self.indexes.table.put_all(rows)

    def copy(self) -> Snapshot:
        """An independent copy (values are immutable and shared)."""
        other = Snapshot()
        other.tables, other.indexes = self.tables.copy(), self.indexes.copy()
        return other

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Snapshot):
            return NotImplemented
        return self._state() == other._state()

    __hash__ = None  # type: ignore[assignment]

    def _state(self) -> tuple[Any, ...]:
        return (*self.tables.state(), {row.key: row for row in self.indexes.table})

    def __repr__(self) -> str:
        return (
            f"<Snapshot {len(self.indexes.table)} associations, {len(self.devices)} devices, "
            f"{len(self.users)} users>"
        )


# History and audit records live in the store only: neither part follows them.
_RECORDS = (ch.AppendAudit, ch.AppendHistory, ch.MoveHistory)
_Step = tuple[Callable[[EntityTables, Any], Any] | None, Callable[..., None] | None]
_STEPS: dict[type[Any], _Step] = {
    t: (ENTITY_APPLY.get(t), INDEX_FOLLOW.get(t)) for t in (*ENTITY_APPLY, *INDEX_FOLLOW, *_RECORDS)
}
