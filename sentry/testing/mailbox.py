"""The demo backend's in-memory mail store: mailboxes, folders, messages, sync
state and change notification.

Approach. A ``Mailbox`` is plain data: six seeded folders (the well-known
Exchange ones, with their MS-ASCMD folder types) holding ``Message`` objects
keyed by ServerId (``"<folder>:<n>"``, the shape Exchange uses). Every change
to a message bumps its ``version``, so "what changed" is always a diff of two
``{ServerId: version}`` snapshots:

* ``SyncStates`` remembers, for each (user, device, collection), the snapshot
  the client holds after each SyncKey the server issued. A request with key K
  is answered with ``diff(snapshot(K), folder now)`` and a new key whose
  snapshot is what that response delivered. Only the last two keys of a
  collection are kept: the current one and its predecessor, so a client that
  lost a response can repeat its request; anything older is an invalid key.
  FolderSync uses the same store with the collection id ``""``.
* ``ChangeHub`` wakes held requests (Ping, Sync with Wait): a ``Waiter``
  watches a set of folders of one user; ``notify`` marks the folders changed
  and sets its event; ``close`` (server shutdown) wakes every waiter at once.

Nothing here performs I/O; the hub only uses ``asyncio.Event`` so held
handlers can await it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import IntEnum

__all__ = [
    "ChangeHub",
    "Folder",
    "FolderType",
    "ItemDiff",
    "Mailbox",
    "Message",
    "Owner",
    "Snapshot",
    "SyncStates",
    "Waiter",
    "diff",
    "new_mailbox",
]

Snapshot = Mapping[str, int]  # ServerId -> version the client holds
HIERARCHY = ""  # collection id under which FolderSync keys are kept


class FolderType(IntEnum):
    """FolderHierarchy Type values (MS-ASCMD 2.2.3.186.3) of the seeded folders."""

    UserGeneric = 1
    Inbox = 2
    Drafts = 3
    DeletedItems = 4
    SentItems = 5
    Outbox = 6
    Tasks = 7
    Calendar = 8
    Contacts = 9


# ServerId, display name, type, AirSync Class of its items.
_SEEDED_FOLDERS: tuple[tuple[str, str, FolderType, str], ...] = (
    ("1", "Inbox", FolderType.Inbox, "Email"),
    ("2", "Drafts", FolderType.Drafts, "Email"),
    ("3", "Deleted Items", FolderType.DeletedItems, "Email"),
    ("4", "Sent Items", FolderType.SentItems, "Email"),
    ("5", "Calendar", FolderType.Calendar, "Calendar"),
    ("6", "Contacts", FolderType.Contacts, "Contacts"),
)


@dataclass
class Message:
    """One mail item."""

    server_id: str
    subject: str
    sender: str  # RFC 5322 mailbox, e.g. '"Alice" <alice@example.com>'
    to: str
    body: str  # plain text
    received: dt.datetime
    read: bool = False
    version: int = 1
    message_class: str = "IPM.Note"

    def mark_read(self, read: bool) -> bool:
        """Set the Read flag; True when it changed (and the version was bumped)."""
        if self.read == read:
            return False
        self.read = read
        self.version += 1
        return True


@dataclass
class Folder:
    """A folder and its items, in arrival order."""

    server_id: str
    name: str
    type: FolderType
    item_class: str
    parent_id: str = "0"
    items: dict[str, Message] = field(default_factory=dict)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1), repr=False)

    def add(
        self, subject: str, body: str, *, sender: str, to: str, received: dt.datetime
    ) -> Message:
        """Store a new message and return it."""
        server_id = f"{self.server_id}:{next(self._ids)}"
        msg = Message(server_id, subject, sender, to, body, received)
        self.items[server_id] = msg
        return msg

    def snapshot(self) -> dict[str, int]:
        return {sid: m.version for sid, m in self.items.items()}


@dataclass
class Mailbox:
    """A user's mailbox: credentials, identity and folders."""

    user: str
    password: str
    email: str
    display_name: str
    folders: dict[str, Folder]

    @property
    def address(self) -> str:
        """The mailbox as an RFC 5322 address with display name."""
        return f'"{self.display_name}" <{self.email}>'

    def folder(self, folder_type: FolderType) -> Folder:
        """The (first) folder of a well-known type."""
        return next(f for f in self.folders.values() if f.type == folder_type)

    @property
    def inbox(self) -> Folder:
        return self.folder(FolderType.Inbox)

    def hierarchy(self) -> dict[str, int]:
        """Folder snapshot for FolderSync: every folder at version 1 (names never change)."""
        return dict.fromkeys(self.folders, 1)


def new_mailbox(
    user: str, password: str, email: str, display_name: str, *, messages: int, now: dt.datetime
) -> Mailbox:
    """A mailbox with the six well-known folders and ``messages`` seeded Inbox items."""
    folders = {sid: Folder(sid, name, ftype, cls) for sid, name, ftype, cls in _SEEDED_FOLDERS}
    box = Mailbox(user, password, email, display_name, folders)
    for n in range(1, messages + 1):
        box.inbox.add(
            f"Welcome message {n}",
            f"Hello {display_name},\r\n\r\nthis is seeded message {n} of the demo backend.\r\n",
            sender='"Demo Postmaster" <postmaster@demo.invalid>',
            to=box.address,
            received=now - dt.timedelta(minutes=messages - n + 1),
        )
    return box


@dataclass(frozen=True, slots=True)
class ItemDiff:
    """What a client holding one snapshot lacks compared to another."""

    added: tuple[str, ...]
    changed: tuple[str, ...]
    deleted: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.deleted)

    def __len__(self) -> int:
        return len(self.added) + len(self.changed) + len(self.deleted)


def diff(known: Snapshot, current: Snapshot) -> ItemDiff:
    """Items added, changed and deleted in ``current`` relative to ``known``."""
    added = tuple(sid for sid in current if sid not in known)
    changed = tuple(sid for sid, v in current.items() if sid in known and known[sid] != v)
    deleted = tuple(sid for sid in known if sid not in current)
    return ItemDiff(added, changed, deleted)


Owner = tuple[str, str]  # (mailbox user, DeviceId)


class _KeyRing:
    """The issued SyncKeys of one collection for one device, newest last."""

    KEEP = 2

    def __init__(self) -> None:
        self.counter = 0
        self.keys: OrderedDict[str, dict[str, int]] = OrderedDict()

    def issue(self, snapshot: Snapshot) -> str:
        self.counter += 1
        key = str(self.counter)
        self.keys[key] = dict(snapshot)
        while len(self.keys) > self.KEEP:
            self.keys.popitem(last=False)
        return key


class SyncStates:
    """Issued SyncKeys and their snapshots per (owner, collection)."""

    def __init__(self) -> None:
        self._rings: dict[tuple[Owner, str], _KeyRing] = {}

    def reset(self, owner: Owner, collection: str, snapshot: Snapshot) -> str:
        """SyncKey 0: forget the collection's keys and issue one for ``snapshot``.

        Keys keep counting up across resets, so a key from before the reset is
        never mistaken for a new one.
        """
        ring = self._rings.setdefault((owner, collection), _KeyRing())
        ring.keys.clear()
        return ring.issue(snapshot)

    def lookup(self, owner: Owner, collection: str, key: str) -> dict[str, int] | None:
        """The snapshot of an issued key, or None when the key is not (or no longer) valid."""
        ring = self._rings.get((owner, collection))
        return None if ring is None else ring.keys.get(key)

    def issue(self, owner: Owner, collection: str, snapshot: Snapshot) -> str:
        return self._rings.setdefault((owner, collection), _KeyRing()).issue(snapshot)

    def latest(self, owner: Owner, collection: str) -> tuple[str, dict[str, int]] | None:
        """The newest key and snapshot of a collection, or None when never synced."""
        ring = self._rings.get((owner, collection))
        if ring is None or not ring.keys:
            return None
        key = next(reversed(ring.keys))
        return key, ring.keys[key]

    def forget_device(self, owner: Owner) -> None:
        for ring_key in [k for k in self._rings if k[0] == owner]:
            del self._rings[ring_key]


class Waiter:
    """One held request: the folders it watches and what woke it."""

    def __init__(self, user: str, folder_ids: frozenset[str]) -> None:
        self.user = user
        self.folder_ids = folder_ids
        self.changed: list[str] = []
        self.closed = False  # woken by server shutdown
        self.superseded = False  # woken by a newer request of the same device
        self.event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        """Return when woken or after ``timeout`` seconds, whichever comes first."""
        try:
            async with asyncio.timeout(timeout):
                await self.event.wait()
        except TimeoutError:
            pass

    def supersede(self) -> None:
        self.superseded = True
        self.event.set()


class ChangeHub:
    """Fan-out of folder changes to the requests held for that user."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[Waiter]] = {}
        self.closed = False
        self.abandoned = 0  # held requests whose client went away (handler cancelled)

    @property
    def held(self) -> int:
        """How many requests are held right now."""
        return sum(len(ws) for ws in self._waiters.values())

    @contextmanager
    def watch(self, user: str, folder_ids: frozenset[str]) -> Iterator[Waiter]:
        """Register a waiter for the duration of the ``with`` block."""
        waiter = Waiter(user, folder_ids)
        if self.closed:
            waiter.closed = True
            waiter.event.set()
        self._waiters.setdefault(user, set()).add(waiter)
        try:
            yield waiter
        except asyncio.CancelledError:
            self.abandoned += 1
            raise
        finally:
            self._waiters[user].discard(waiter)

    def notify(self, user: str, folder_id: str) -> int:
        """Wake the user's waiters that watch ``folder_id``; return how many."""
        woken = 0
        for waiter in self._waiters.get(user, ()):
            if folder_id in waiter.folder_ids:
                if folder_id not in waiter.changed:
                    waiter.changed.append(folder_id)
                waiter.event.set()
                woken += 1
        return woken

    def close(self) -> None:
        """Server shutdown: wake every waiter now and any later one at once."""
        self.closed = True
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.closed = True
                waiter.event.set()
