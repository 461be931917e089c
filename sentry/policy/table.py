"""The association table of a ``Snapshot``: compact, indexed by device and mailbox.

Held by the association indexes (``associations.AssociationIndexes``).

Approach. A gateway may hold a million associations; most devices carry one
mailbox and most mailboxes sit on one or two devices. So there is no global
key -> row dict. Rows are stored per DeviceId — the row itself when the
device has one mailbox, a tuple of rows when it has several — and a lookup
by key is one dict probe plus a scan of that device's few rows
(O(mailboxes on the device)). The DeviceIds of each mailbox are kept the
same way (the id itself, or a tuple of ids). Compared with a key dict plus
two dicts of lists, this saves about a hundred bytes per association and a
dict insert per row at load. Rows an admin linked to a managed device
(Link To) are indexed by that device. The number of rows in each list state
(``allowed``, ``blocked``, ``quarantined``, ``wipe_pending``, ``wiped``: the admin API's names)
is kept as rows change, for the metrics gauge, and unverified rows
(``verified_at`` None) are kept in a set, so expiring them never scans the table.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from sentry.model import Association, AssociationKey
from sentry.store.base import AssociationState, association_state

__all__ = ["AssociationTable"]

_Rows = Association | tuple[Association, ...]
_Ids = str | tuple[str, ...]


class AssociationTable:
    """Associations by DeviceId, DeviceIds by mailbox, Link To rows by device."""

    __slots__ = ("_by_device", "_by_user", "_count", "_manual", "_states", "_unverified")

    def __init__(self) -> None:
        self._by_device: dict[str, _Rows] = {}
        self._by_user: dict[str, _Ids] = {}
        self._manual: dict[str, set[AssociationKey]] = {}
        self._count = 0
        self._states = dict.fromkeys(AssociationState, 0)  # kept as rows change
        self._unverified: set[AssociationKey] = set()

    # --- Reads ---

    def get(self, device_id: str, user: str) -> Association | None:
        """The row of ``user`` on ``device_id``, or None."""
        rows = self._by_device.get(device_id)
        if rows is None:
            return None
        if isinstance(rows, tuple):
            for row in rows:
                if row.key.user == user:
                    return row
            return None
        return rows if rows.key.user == user else None

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Association]:
        for rows in self._by_device.values():
            if isinstance(rows, tuple):
                yield from rows
            else:
                yield rows

    def on_device(self, device_id: str) -> list[Association]:
        """The rows of one DeviceId."""
        rows = self._by_device.get(device_id)
        if rows is None:
            return []
        return list(rows) if isinstance(rows, tuple) else [rows]

    def device_ids(self, user: str) -> tuple[str, ...]:
        """The DeviceIds of one mailbox."""
        ids = self._by_user.get(user)
        if ids is None:
            return ()
        return ids if isinstance(ids, tuple) else (ids,)

    def mailbox_count(self, device_id: str) -> int:
        """How many rows the DeviceId has."""
        rows = self._by_device.get(device_id)
        return 0 if rows is None else len(rows) if isinstance(rows, tuple) else 1

    def device_count(self, user: str) -> int:
        """How many rows the mailbox has."""
        ids = self._by_user.get(user)
        return 0 if ids is None else len(ids) if isinstance(ids, tuple) else 1

    def state_counts(self) -> dict[AssociationState, int]:
        """How many rows are in each list state (kept up to date, no scan)."""
        return dict(self._states)

    def manually_linked(self, device: str) -> set[AssociationKey]:
        """Keys an admin linked to managed device ``device``."""
        return set(self._manual.get(device, ()))

    def unverified(self) -> set[AssociationKey]:
        """Keys of the rows the backend never accepted (``verified_at`` None)."""
        return set(self._unverified)

    # --- Writes ---

    def put(self, row: Association) -> Association | None:
        """Insert or replace ``row``; return the row it replaced."""
        old = self._store(row)
        if old is not None:
            self._states[association_state(old)] -= 1
        self._states[association_state(row)] += 1
        if old is None:
            self._count += 1
            user, device_id = row.key.user, row.key.device_id
            ids = self._by_user.get(user)
            self._by_user[user] = device_id if ids is None else _plus(ids, device_id)
        if old is None or old.manual_link != row.manual_link:
            self._relink(old, row.key, row.manual_link)
        if row.verified_at is None:
            self._unverified.add(row.key)
        elif old is not None and old.verified_at is None:
            self._unverified.discard(row.key)
        return old

    def put_all(self, rows: Iterable[Association]) -> None:
        """``put`` each row; the common case (first row of its DeviceId, no Link To)
        is inlined, as a load does it a million times."""
        by_device, by_user, put, added = self._by_device, self._by_user, self.put, 0
        states = self._states
        for row in rows:
            device_id, user = row.key
            if row.manual_link is not None or device_id in by_device:
                put(row)
                continue
            by_device[device_id] = row
            states[association_state(row)] += 1
            if row.verified_at is None:
                self._unverified.add(row.key)
            ids = by_user.get(user)
            by_user[user] = device_id if ids is None else _plus(ids, device_id)
            added += 1
        self._count += added

    def delete(self, device_id: str, user: str) -> Association | None:
        """Remove a row; return it (None when there was none)."""
        old = self.get(device_id, user)
        if old is None:
            return None
        rest = tuple(r for r in self.on_device(device_id) if r is not old)
        _set_rows(self._by_device, device_id, rest)
        ids = tuple(d for d in self.device_ids(user) if d != device_id)
        _set_ids(self._by_user, user, ids)
        self._count -= 1
        self._states[association_state(old)] -= 1
        self._relink(old, old.key, None)
        self._unverified.discard(old.key)
        return old

    def copy(self) -> AssociationTable:
        """An independent copy (rows and tuples are immutable and shared)."""
        other = AssociationTable()
        other._by_device = dict(self._by_device)
        other._by_user = dict(self._by_user)
        other._manual = {k: set(v) for k, v in self._manual.items()}
        other._count = self._count
        other._states = dict(self._states)
        other._unverified = set(self._unverified)
        return other

    def _store(self, row: Association) -> Association | None:
        device_id, user = row.key
        stored = self._by_device.get(device_id)
        if stored is None:
            self._by_device[device_id] = row
            return None
        rows = stored if isinstance(stored, tuple) else (stored,)
        for i, old in enumerate(rows):
            if old.key.user == user:
                replaced = (*rows[:i], row, *rows[i + 1 :])
                self._by_device[device_id] = replaced if len(replaced) > 1 else row
                return old
        self._by_device[device_id] = (*rows, row)
        return None

    def _relink(self, old: Association | None, key: AssociationKey, link: str | None) -> None:
        if old is not None and old.manual_link is not None:
            keys = self._manual.get(old.manual_link)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._manual[old.manual_link]
        if link is not None:
            self._manual.setdefault(link, set()).add(key)


def _plus(ids: _Ids, device_id: str) -> tuple[str, ...]:
    return (*ids, device_id) if isinstance(ids, tuple) else (ids, device_id)


def _set_rows(index: dict[str, _Rows], key: str, values: tuple[Association, ...]) -> None:
    """Store compactly: nothing, the single row, or the tuple."""
    if not values:
        del index[key]
    else:
        index[key] = values[0] if len(values) == 1 else values


def _set_ids(index: dict[str, _Ids], key: str, values: tuple[str, ...]) -> None:
    """Store compactly: nothing, the single id, or the tuple."""
    if not values:
        del index[key]
    else:
        index[key] = values[0] if len(values) == 1 else values
