"""The associations of a ``Snapshot`` and the indexes and caches derived from them.

Approach. ``AssociationIndexes`` holds what the request path looks up
besides the entity values (``entities.EntityTables``), each lookup O(1) or
O(mailboxes on the device), never a scan:

- the associations per EAS DeviceId and DeviceIds per mailbox, stored
  compactly (``table.AssociationTable``), with the count per list state
  maintained incrementally;
- the managed device of each EAS DeviceId (non-retired devices only) and the
  managed devices of each owner;
- the alias index (``indexes.NameIndex``): every known name of a user
  (email, aliases; canonical under the realms) -> the user's principal;
- pushed mailboxes per managed device, resolved on first use and dropped
  whenever the device, its owner, a known name, a label or an Exchange
  setting changes.

It follows the entity tables: ``Snapshot.apply`` applies a change to the
entity tables first, then calls this part's handler for the change type
(``INDEX_FOLLOW``) with the value the entity handler replaced and the tables
as they now are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sentry.model import Association, Device
from sentry.slots import fast_setter

from . import changes as ch
from .entities import EntityTables
from .indexes import NameIndex, known_names
from .table import AssociationTable
from .templates import PushedMailboxes, resolve_pushed_mailboxes

__all__ = ["INDEX_FOLLOW", "AssociationIndexes"]

_NO_PUSH = PushedMailboxes()
_with_last_seen = fast_setter(Association, "last_seen")  # a Touch per request: keep it cheap


class AssociationIndexes:
    """The association table, the device indexes, the alias index and the pushed cache."""

    __slots__ = ("eas_index", "names", "owned", "pushed_cache", "table")

    def __init__(self) -> None:
        self.table = AssociationTable()
        self.eas_index: dict[str, Device] = {}  # EAS DeviceId -> non-retired managed device
        self.owned: dict[str, set[str]] = {}  # owner -> managed device ids
        self.names = NameIndex()
        self.pushed_cache: dict[str, PushedMailboxes] = {}

    def copy(self) -> AssociationIndexes:
        """An independent copy (the pushed cache starts empty)."""
        other = AssociationIndexes()
        other.table = self.table.copy()
        other.eas_index = dict(self.eas_index)
        other.owned = {k: set(v) for k, v in self.owned.items()}
        other.names = self.names.copy()
        return other

    def pushed(self, device_id: str, tables: EntityTables, canonical: Any) -> PushedMailboxes:
        """Mailboxes pushed to managed device ``device_id``, with errors; cached.
        ``canonical`` is ``Snapshot.canonical`` (names given in labels)."""
        cached = self.pushed_cache.get(device_id)
        if cached is None:
            device = tables.devices.get(device_id)
            if device is None:
                cached = _NO_PUSH
            else:
                owner = tables.users.get(device.owner)
                labels, settings = tables.labels.values(), tables.settings
                cached = resolve_pushed_mailboxes(device, owner, labels, settings, canonical)
            self.pushed_cache[device_id] = cached
        return cached

    # --- One method per change type the indexes follow ---

    def _put_association(self, change: ch.PutAssociation, old: None, t: EntityTables) -> None:
        self.table.put(change.association)

    def _delete_association(self, change: ch.DeleteAssociation, old: None, t: EntityTables) -> None:
        self.table.delete(change.key.device_id, change.key.user)

    def _touch(self, change: ch.Touch, old: None, t: EntityTables) -> None:
        row = self.table.get(change.key.device_id, change.key.user)
        if row is not None and change.last_seen > row.last_seen:
            self.table.put(_with_last_seen(row, change.last_seen))

    def _put_user(self, change: ch.PutUser, old: None, t: EntityTables) -> None:
        user = change.user
        self._forget_pushed(self.owned.get(user.principal, ()))
        if self.names.set(user.principal, known_names(user, t.realms)):
            self.pushed_cache.clear()  # pushed principals resolve through the known names

    def _delete_user(self, change: ch.DeleteUser, old: None, t: EntityTables) -> None:
        self._forget_pushed(self.owned.get(change.principal, ()))
        if self.names.set(change.principal, frozenset()):
            self.pushed_cache.clear()

    def _put_realms(self, change: ch.PutRealms, old: None, t: EntityTables) -> None:
        self.names.rebuild(t.users.values(), t.realms)
        self.pushed_cache.clear()

    def _put_device(self, change: ch.PutDevice, old: Device | None, t: EntityTables) -> None:
        device = change.device
        self._unindex_device(device.id, old)
        self.owned.setdefault(device.owner, set()).add(device.id)
        if not device.retired:
            self.eas_index.update(dict.fromkeys(device.eas_ids, device))

    def _delete_device(self, change: ch.DeleteDevice, old: Device | None, t: EntityTables) -> None:
        self._unindex_device(change.device_id, old)

    def _unindex_device(self, device_id: str, old: Device | None) -> None:
        self.pushed_cache.pop(device_id, None)
        if old is None:
            return
        _discard(self.owned, old.owner, device_id)
        for eas_id in old.eas_ids:
            held = self.eas_index.get(eas_id)
            if held is not None and held.id == device_id:
                del self.eas_index[eas_id]

    def _forget_all_pushed(self, change: ch.Change, old: Any, t: EntityTables) -> None:
        """A label or an Exchange setting changed: any device's pushed list may have."""
        self.pushed_cache.clear()

    def _forget_pushed(self, device_ids: Iterable[str]) -> None:
        for device_id in device_ids:
            self.pushed_cache.pop(device_id, None)


def _discard(index: dict[str, set[Any]], key: str | None, value: object) -> None:
    values = None if key is None else index.get(key)
    if values is None or key is None:
        return
    values.discard(value)
    if not values:
        del index[key]


# Change type -> what the indexes do after the entity tables applied it
# (called with the change, the value the entity handler replaced, the tables).
INDEX_FOLLOW: dict[type[Any], Callable[[AssociationIndexes, Any, Any, EntityTables], None]] = {
    ch.PutAssociation: AssociationIndexes._put_association,
    ch.DeleteAssociation: AssociationIndexes._delete_association,
    ch.Touch: AssociationIndexes._touch,
    ch.PutUser: AssociationIndexes._put_user,
    ch.DeleteUser: AssociationIndexes._delete_user,
    ch.PutRealms: AssociationIndexes._put_realms,
    ch.PutDevice: AssociationIndexes._put_device,
    ch.DeleteDevice: AssociationIndexes._delete_device,
    ch.PutSetting: AssociationIndexes._forget_all_pushed,
    ch.DeleteSetting: AssociationIndexes._forget_all_pushed,
    ch.PutLabel: AssociationIndexes._forget_all_pushed,
    ch.DeleteLabel: AssociationIndexes._forget_all_pushed,
}
