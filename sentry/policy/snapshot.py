"""The in-memory state the policy decides against, with its indexes.

Approach. A ``Snapshot`` holds the current value of everything (users,
devices, pools, routing, preferences, settings, labels, associations) and a
few indexes so that every lookup on the request path costs O(1) or
O(mailboxes on the device), never a scan:

- associations per EAS DeviceId and DeviceIds per mailbox, stored compactly
  (``table.AssociationTable``): a lookup by key is one dict probe and a
  scan of that device's few rows;
- the managed device of each EAS DeviceId (non-retired devices only), the
  devices of each owner, the associations an admin linked to each device;
- pushed mailboxes per device, computed on first use and dropped whenever a
  device, its owner, a label or an Exchange setting changes;
- the alias index: every known name of a user (email, aliases; canonical
  under ``realms``) -> the user's principal, so ``principal_of`` is one dict
  probe on the request path;
- the established backend type of each managed device and each unregistered
  DeviceId (``established_for``: one dict probe);
- the device access rules, compiled, with a memo from a device's facts to
  the first matching rule (``rule_for``: one dict probe).

It changes only through ``apply(changes)``, the same change list the store
writes in one transaction, so memory and disk cannot drift apart. History
and audit records are not kept here (they are store queries).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from sentry.model import (
    NO_REALMS,
    NO_RULES,
    AccessRule,
    AccessRules,
    Association,
    AssociationKey,
    Device,
    EstablishedType,
    ExchangeSetting,
    Label,
    Pool,
    Preferences,
    Realms,
    Routing,
    User,
    canonical_principal,
    principal_domain,
)
from sentry.store.base import AssociationState

from . import changes as ch
from ._fast import fast_setter
from .access_rules import RuleSet, facts_of
from .indexes import EstablishedIndex, NameIndex, known_names
from .table import AssociationTable
from .templates import PushedMailboxes, resolve_pushed_mailboxes

__all__ = ["Snapshot"]

_NO_PUSH = PushedMailboxes()
_with_last_seen = fast_setter(Association, "last_seen")  # a Touch per request: keep it cheap


class Snapshot:
    """Everything the gateway knows, indexed for the request path."""

    __slots__ = (
        "_eas_index",
        "_established",
        "_names",
        "_owned",
        "_pushed",
        "_ruleset",
        "_table",
        "_types",
        "devices",
        "labels",
        "pools",
        "prefs",
        "realms",
        "routing",
        "settings",
        "users",
    )

    def __init__(self) -> None:
        self.users: dict[str, User] = {}
        self.devices: dict[str, Device] = {}
        self.pools: dict[str, Pool] = {}
        self.routing = Routing()
        self.prefs = Preferences()
        self.settings: dict[str, ExchangeSetting] = {}
        self.labels: dict[str, Label] = {}
        self._table = AssociationTable()
        self._eas_index: dict[str, Device] = {}
        self._owned: dict[str, set[str]] = {}
        self._pushed: dict[str, PushedMailboxes] = {}
        self._types: frozenset[str] = frozenset()
        self.realms: Realms = NO_REALMS
        self._names = NameIndex()
        self._established = EstablishedIndex()
        self._ruleset = RuleSet(NO_RULES)

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
        access_rules: AccessRules = NO_RULES,
    ) -> Snapshot:
        """A snapshot holding the given values (tests, the store's ``load``)."""
        snap = cls()
        snap.realms = realms
        snap.apply(ch.PutUser(u) for u in users)
        snap.apply(ch.PutDevice(d) for d in devices)
        snap.apply(ch.PutPool(p) for p in pools)
        snap.apply(ch.PutSetting(s) for s in settings)
        snap.apply(ch.PutLabel(lb) for lb in labels)
        snap.routing = routing or Routing()
        snap.prefs = prefs or Preferences()
        snap.apply(ch.PutEstablished(e) for e in established)
        snap._ruleset = RuleSet(access_rules)
        snap.add_associations(associations)
        return snap

    # --- Reads ---

    def get(self, key: tuple[str, str]) -> Association | None:
        """The association with ``key`` (an ``AssociationKey`` or a plain pair), or None."""
        return self._table.get(key[0], key[1])

    def __contains__(self, key: object) -> bool:
        return isinstance(key, tuple) and len(key) == 2 and self._table.get(*key) is not None

    def __len__(self) -> int:
        return len(self._table)

    def keys(self) -> Iterator[AssociationKey]:
        """Every association key (no particular order)."""
        return (row.key for row in self._table)

    def associations(self) -> Iterator[Association]:
        """Every association (no particular order)."""
        return iter(self._table)

    def on_device(self, device_id: str) -> list[Association]:
        """The associations of one EAS DeviceId."""
        return self._table.on_device(device_id)

    def of_user(self, user: str) -> list[Association]:
        """The associations of one mailbox principal."""
        get = self._table.get
        return [row for d in self._table.device_ids(user) if (row := get(d, user)) is not None]

    def mailbox_count(self, device_id: str) -> int:
        """How many associations the EAS DeviceId has."""
        return self._table.mailbox_count(device_id)

    def device_count(self, user: str) -> int:
        """How many associations (devices) the mailbox has."""
        return self._table.device_count(user)

    def device_for_eas(self, device_id: str) -> Device | None:
        """The registered (non-retired) managed device that has this EAS DeviceId."""
        return self._eas_index.get(device_id)

    def devices_of(self, owner: str) -> set[str]:
        """Ids of the managed devices owned by ``owner``."""
        return set(self._owned.get(owner, ()))

    def manually_linked(self, device_id: str) -> set[AssociationKey]:
        """Keys an admin linked to managed device ``device_id`` (Link To)."""
        return self._table.manually_linked(device_id)

    def unverified(self) -> set[AssociationKey]:
        """Keys of the associations the backend never accepted."""
        return self._table.unverified()

    # --- Principals ---

    def principal_of(self, user: str) -> str:
        """The principal a canonical name stands for: the user whose known name
        (email, alias) it is, else the name itself."""
        return self._names.owners.get(user, user)

    def canonical(self, raw: str) -> str | None:
        """THE rule for any name given to the gateway (``canonical_principal``
        under ``realms``), then resolved through the alias index."""
        key = canonical_principal(raw, self.realms)
        return None if key is None else self._names.resolve(key)

    def names_of(self, principal: str) -> frozenset[str]:
        """A registered user's other known names (canonical)."""
        return self._names.names_of(principal)

    def alias_owner(self, name: str) -> str | None:
        """The user whose known name ``name`` is (None: no one's alias)."""
        return self._names.owner(name)

    # --- Device access rules ---

    @property
    def access_rules(self) -> AccessRules:
        """The device access rules in evaluation order."""
        return self._ruleset.rules

    @property
    def rule_set(self) -> RuleSet:
        """The compiled rules with their memo (``access_rules.RuleSet``)."""
        return self._ruleset

    def rule_for(self, row: Any) -> AccessRule | None:
        """The first device access rule matching what ``row``'s device said
        (DeviceType, DeviceInformation, User-Agent, protocol version), or None."""
        ruleset = self._ruleset
        return ruleset.first(facts_of(row)) if ruleset.rules else None

    # --- Established backend types ---

    def established(self, scope: str) -> EstablishedType | None:
        """The established backend type of a scope (``device:<id>``/``eas:<DeviceId>``)."""
        return self._established.get(scope)

    def established_for(self, device: Device | None, device_id: str) -> EstablishedType | None:
        """The established type that binds a row: its managed device's, else its DeviceId's."""
        if device is not None:
            return self._established.by_device.get(device.id)
        return self._established.by_eas.get(device_id)

    def established_types(self) -> list[EstablishedType]:
        """Every established type, ordered by scope."""
        return self._established.all()

    def pushed(self, device_id: str) -> PushedMailboxes:
        """Mailboxes pushed to a managed device, with errors; cached."""
        cached = self._pushed.get(device_id)
        if cached is None:
            cached = self._resolve_pushed(device_id)
            self._pushed[device_id] = cached
        return cached

    def _resolve_pushed(self, device_id: str) -> PushedMailboxes:
        device = self.devices.get(device_id)
        if device is None:
            return _NO_PUSH
        owner = self.users.get(device.owner)
        labels, settings = self.labels.values(), self.settings
        return resolve_pushed_mailboxes(device, owner, labels, settings, self.canonical)

    @property
    def backend_types(self) -> frozenset[str]:
        """The backend types of the configured pools."""
        return self._types

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
        """Apply changes in order (history and audit records are ignored)."""
        for change in changes:
            handler = _APPLY.get(type(change))
            if handler is None:
                raise TypeError(f"not a change: {change!r}")
            handler(self, change)

    def state_counts(self) -> dict[AssociationState, int]:
        """Associations by list state (``allowed``, ``blocked``, ``wipe_pending``,
        ``wiped``), maintained incrementally (no scan)."""
        return self._table.state_counts()

    def add_associations(self, rows: Iterable[Association]) -> None:
        """Bulk insert for loading: ``PutAssociation`` for each row, without the changes."""
        self._table.put_all(rows)

    def copy(self) -> Snapshot:
        """An independent copy (values are immutable and shared)."""
        other = Snapshot()
        for name in ("users", "devices", "pools", "settings", "labels", "_eas_index"):
            setattr(other, name, dict(getattr(self, name)))
        other._owned = {k: set(v) for k, v in self._owned.items()}
        other._types = self._types
        other._table = self._table.copy()
        other.routing, other.prefs, other.realms = self.routing, self.prefs, self.realms
        other._names, other._established = self._names.copy(), self._established.copy()
        other._ruleset = RuleSet(self._ruleset.rules)
        return other

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Snapshot):
            return NotImplemented
        return self._state() == other._state()

    __hash__ = None  # type: ignore[assignment]

    def _state(self) -> tuple[Any, ...]:
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
            {row.key: row for row in self._table},
            self.realms,
            self._established.state(),
            self._ruleset.rules,
        )

    def __repr__(self) -> str:
        return (
            f"<Snapshot {len(self._table)} associations, {len(self.devices)} devices, "
            f"{len(self.users)} users>"
        )

    # --- One method per change type ---

    def _put_association(self, change: ch.PutAssociation) -> None:
        self._table.put(change.association)

    def _delete_association(self, change: ch.DeleteAssociation) -> None:
        self._table.delete(change.key.device_id, change.key.user)

    def _touch(self, change: ch.Touch) -> None:
        old = self._table.get(change.key.device_id, change.key.user)
        if old is not None and change.last_seen > old.last_seen:
            self._table.put(_with_last_seen(old, change.last_seen))

    def _put_user(self, change: ch.PutUser) -> None:
        user = change.user
        self.users[user.principal] = user
        self._forget_pushed(self._owned.get(user.principal, ()))
        if self._names.set(user.principal, known_names(user, self.realms)):
            self._pushed.clear()  # pushed principals resolve through the known names

    def _delete_user(self, change: ch.DeleteUser) -> None:
        self.users.pop(change.principal, None)
        self._forget_pushed(self._owned.get(change.principal, ()))
        if self._names.set(change.principal, frozenset()):
            self._pushed.clear()

    def _put_realms(self, change: ch.PutRealms) -> None:
        self.realms = change.realms
        self._names.rebuild(self.users.values(), self.realms)
        self._pushed.clear()

    def _put_access_rules(self, change: ch.PutAccessRules) -> None:
        self._ruleset = RuleSet(change.rules)

    def _put_established(self, change: ch.PutEstablished) -> None:
        self._established.put(change.established)

    def _delete_established(self, change: ch.DeleteEstablished) -> None:
        self._established.delete(change.scope)

    def _put_device(self, change: ch.PutDevice) -> None:
        self._unindex_device(change.device.id)
        device = change.device
        self.devices[device.id] = device
        self._owned.setdefault(device.owner, set()).add(device.id)
        if not device.retired:
            self._eas_index.update(dict.fromkeys(device.eas_ids, device))

    def _delete_device(self, change: ch.DeleteDevice) -> None:
        self._unindex_device(change.device_id)
        self.devices.pop(change.device_id, None)

    def _unindex_device(self, device_id: str) -> None:
        old = self.devices.get(device_id)
        self._pushed.pop(device_id, None)
        if old is None:
            return
        _discard(self._owned, old.owner, device_id)
        for eas_id in old.eas_ids:
            held = self._eas_index.get(eas_id)
            if held is not None and held.id == device_id:
                del self._eas_index[eas_id]

    def _put_pool(self, change: ch.PutPool) -> None:
        self.pools[change.pool.name] = change.pool
        self._types = frozenset(p.type for p in self.pools.values())

    def _delete_pool(self, change: ch.DeletePool) -> None:
        self.pools.pop(change.name, None)
        self._types = frozenset(p.type for p in self.pools.values())

    def _put_routing(self, change: ch.PutRouting) -> None:
        self.routing = change.routing

    def _put_preferences(self, change: ch.PutPreferences) -> None:
        self.prefs = change.prefs

    def _put_setting(self, change: ch.PutSetting) -> None:
        self.settings[change.setting.name] = change.setting
        self._pushed.clear()

    def _delete_setting(self, change: ch.DeleteSetting) -> None:
        self.settings.pop(change.name, None)
        self._pushed.clear()

    def _put_label(self, change: ch.PutLabel) -> None:
        self.labels[change.label.name] = change.label
        self._pushed.clear()

    def _delete_label(self, change: ch.DeleteLabel) -> None:
        self.labels.pop(change.name, None)
        self._pushed.clear()

    def _record(self, change: ch.AppendAudit | ch.AppendHistory | ch.MoveHistory) -> None:
        """History and audit live in the store only."""

    def _forget_pushed(self, device_ids: Iterable[str]) -> None:
        for device_id in device_ids:
            self._pushed.pop(device_id, None)


def _discard(index: dict[str, set[Any]], key: str | None, value: object) -> None:
    values = None if key is None else index.get(key)
    if values is None or key is None:
        return
    values.discard(value)
    if not values:
        del index[key]


_APPLY: dict[type[Any], Callable[[Snapshot, Any], None]] = {
    ch.PutAssociation: Snapshot._put_association,
    ch.DeleteAssociation: Snapshot._delete_association,
    ch.Touch: Snapshot._touch,
    ch.PutUser: Snapshot._put_user,
    ch.DeleteUser: Snapshot._delete_user,
    ch.PutDevice: Snapshot._put_device,
    ch.DeleteDevice: Snapshot._delete_device,
    ch.PutPool: Snapshot._put_pool,
    ch.DeletePool: Snapshot._delete_pool,
    ch.PutRouting: Snapshot._put_routing,
    ch.PutPreferences: Snapshot._put_preferences,
    ch.PutSetting: Snapshot._put_setting,
    ch.DeleteSetting: Snapshot._delete_setting,
    ch.PutLabel: Snapshot._put_label,
    ch.DeleteLabel: Snapshot._delete_label,
    ch.PutRealms: Snapshot._put_realms,
    ch.PutAccessRules: Snapshot._put_access_rules,
    ch.PutEstablished: Snapshot._put_established,
    ch.DeleteEstablished: Snapshot._delete_established,
    ch.MoveHistory: Snapshot._record,
    ch.AppendAudit: Snapshot._record,
    ch.AppendHistory: Snapshot._record,
}
