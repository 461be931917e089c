"""Two small indexes of a ``Snapshot``: users' known names, established types.

The name index is part of the association indexes
(``associations.AssociationIndexes``), the established types are an entity
table (``entities.EntityTables``).

Approach. Both answer a question of the request path in one dict probe:

- ``NameIndex``: which user a name stands for. A user's known names are the
  canonical forms (under the configured realms) of the email address and the
  aliases (``known_names``); each maps to the user's principal. The index
  trusts what it is given: that no name names two users is checked before a
  write (``registry.upsert_user``, ``rekey.realm_changes``).
- ``EstablishedIndex``: the established backend type of each managed device
  (scope ``device:<id>``) and each unregistered DeviceId (``eas:<id>``),
  held in two dicts keyed by the bare id so that a lookup builds no string.
"""

from __future__ import annotations

from collections.abc import Iterable

from sentry.model import Device, EstablishedType, Realms, User, canonical_principal

__all__ = ["DEVICE_SCOPE", "EAS_SCOPE", "EstablishedIndex", "NameIndex", "known_names"]

DEVICE_SCOPE = "device:"
"""Scope prefix of a managed device's established backend type (``device:<id>``)."""
EAS_SCOPE = "eas:"
"""Scope prefix of an unregistered DeviceId's established backend type (``eas:<DeviceId>``)."""


def known_names(user: User, realms: Realms) -> frozenset[str]:
    """The user's other names, canonical under ``realms``: email and aliases
    (memoised on the user value for these realms: ``User.known_cache``)."""
    cached = user.known_cache
    if cached is not None and cached[0] is realms:
        return cached[1]
    names = {canonical_principal(a, realms) for a in user.aliases}
    if user.email:
        names.add(canonical_principal(user.email, realms))
    names.discard(user.principal)
    found = frozenset(n for n in names if n)
    object.__setattr__(user, "known_cache", (realms, found))
    return found


class NameIndex:
    """Known name -> principal (``owners``, read directly on the request
    path), and each principal's known names."""

    __slots__ = ("_names", "owners")

    def __init__(self) -> None:
        self.owners: dict[str, str] = {}
        self._names: dict[str, frozenset[str]] = {}

    def resolve(self, name: str) -> str:
        """The principal ``name`` stands for (``name`` itself when it is no one's)."""
        return self.owners.get(name, name)

    def owner(self, name: str) -> str | None:
        """The principal whose known name ``name`` is, or None."""
        return self.owners.get(name)

    def names_of(self, principal: str) -> frozenset[str]:
        """The known names of ``principal`` (empty for an unknown one)."""
        return self._names.get(principal, frozenset())

    def set(self, principal: str, names: frozenset[str]) -> bool:
        """Make ``names`` the known names of ``principal``; whether anything changed."""
        if names == self._names.get(principal, frozenset()):
            return False
        for name in self._names.pop(principal, ()):
            if self.owners.get(name) == principal:
                del self.owners[name]
        if names:
            self._names[principal] = names
            self.owners.update(dict.fromkeys(names, principal))
        return True

    def rebuild(self, users: Iterable[User], realms: Realms) -> None:
        """Index every user's names afresh (the realms changed)."""
        self.owners.clear()
        self._names.clear()
        for user in users:
            self.set(user.principal, known_names(user, realms))

    def copy(self) -> NameIndex:
        other = NameIndex()
        other.owners, other._names = dict(self.owners), dict(self._names)
        return other


class EstablishedIndex:
    """Established backend types by managed device id (``by_device``) and by
    DeviceId (``by_eas``); read directly on the request path."""

    __slots__ = ("by_device", "by_eas")

    def __init__(self) -> None:
        self.by_device: dict[str, EstablishedType] = {}
        self.by_eas: dict[str, EstablishedType] = {}

    def get(self, scope: str) -> EstablishedType | None:
        """The type of a scope (``device:<id>``/``eas:<DeviceId>``), or None."""
        table, key = self._where(scope)
        return None if table is None else table.get(key)

    def binding(self, device: Device | None, device_id: str) -> EstablishedType | None:
        """The type binding a row: its managed device's, else its DeviceId's."""
        if device is not None:
            return self.by_device.get(device.id)
        return self.by_eas.get(device_id)

    def all(self) -> list[EstablishedType]:
        """Every established type, ordered by scope."""
        return sorted([*self.by_device.values(), *self.by_eas.values()], key=lambda e: e.scope)

    def put(self, established: EstablishedType) -> None:
        table, key = self._where(established.scope)
        if table is not None:
            table[key] = established

    def delete(self, scope: str) -> None:
        table, key = self._where(scope)
        if table is not None:
            table.pop(key, None)

    def copy(self) -> EstablishedIndex:
        other = EstablishedIndex()
        other.by_device, other.by_eas = dict(self.by_device), dict(self.by_eas)
        return other

    def state(self) -> tuple[dict[str, EstablishedType], dict[str, EstablishedType]]:
        """The contents, for equality of snapshots."""
        return self.by_device, self.by_eas

    def _where(self, scope: str) -> tuple[dict[str, EstablishedType] | None, str]:
        if scope.startswith(DEVICE_SCOPE):
            return self.by_device, scope[len(DEVICE_SCOPE) :]
        if scope.startswith(EAS_SCOPE):
            return self.by_eas, scope[len(EAS_SCOPE) :]
        return None, scope
