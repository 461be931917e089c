"""Configuration and the whole mutable state of one demo backend instance.

Approach. ``BackendConfig`` is frozen and built once (by a test, by bench/ or
by ``sentry demo-backend``). ``BackendState`` is created from it per app and
is the only object the handlers mutate: the mailboxes, the provisioning
record and DeviceInformation of each (user, DeviceId), the cached Ping and
Sync requests, the sync-key store, the change hub and the counters. Delivery
of a message goes through ``BackendState.deliver`` so that every new item
wakes the held requests of its owner.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sentry.eas.wbxml import Element

from .mailbox import ChangeHub, FolderType, Mailbox, Message, Owner, SyncStates, Waiter, new_mailbox

__all__ = [
    "DEFAULT_MAILBOXES",
    "PROTOCOL_VERSIONS",
    "BackendConfig",
    "BackendState",
    "BackendStats",
    "MailboxSpec",
    "PingParams",
    "PolicyRecord",
]

PROTOCOL_VERSIONS = ("2.5", "12.0", "12.1", "14.0", "14.1", "16.0", "16.1")

# MS-Server-ActiveSync values by backend type: a server build, not a protocol
# version (eas-protocol.md §1.5). Unknown types get the Exchange 2016 value.
_SERVER_BUILDS = {
    "exchange": "15.1",
    "office365": "15.20",
    "gmail": "14.0",
    "traveler": "14.0",
}


class MailboxSpec(NamedTuple):
    """One configured mailbox; a plain 4-tuple works too."""

    user: str
    password: str
    email: str
    display_name: str


DEFAULT_MAILBOXES = (
    MailboxSpec("alice", "secret", "alice@example.com", "Alice Example"),
    MailboxSpec("bob", "secret", "bob@example.com", "Bob Example"),
)


@dataclass(frozen=True)
class BackendConfig:
    """What a demo backend serves and how strict it is."""

    backend_type: str = "exchange"
    mailboxes: tuple[MailboxSpec, ...] = DEFAULT_MAILBOXES
    seed_messages: int = 3  # messages in each Inbox at start
    require_provisioning: bool = True
    min_heartbeat: int = 1  # seconds; Exchange uses 60, tests want short heartbeats
    max_heartbeat: int = 3540
    max_ping_folders: int = 300
    server_version: str | None = None  # MS-Server-ActiveSync; None: by backend_type
    protocol_versions: tuple[str, ...] = PROTOCOL_VERSIONS
    policy: tuple[tuple[str, str], ...] = ()  # EASProvisionDoc settings over the default
    # Authorization: Bearer <token> -> the mailbox name it proves (None: not accepted).
    # None: Bearer is not accepted at all (401), as a Basic-only server.
    bearer: Callable[[str], str | None] | None = None

    def __post_init__(self) -> None:
        specs = tuple(MailboxSpec(*m) for m in self.mailboxes)
        object.__setattr__(self, "mailboxes", specs)
        if not 0 < self.min_heartbeat <= self.max_heartbeat:
            raise ValueError("need 0 < min_heartbeat <= max_heartbeat")
        users = [m.user.casefold() for m in specs]
        if len(set(users)) != len(users):
            raise ValueError("mailbox user names must be unique")
        if self.seed_messages < 0:
            raise ValueError("seed_messages must be >= 0")

    @property
    def server_build(self) -> str:
        """The MS-Server-ActiveSync header value."""
        return self.server_version or _SERVER_BUILDS.get(self.backend_type, "15.1")


@dataclass
class BackendStats:
    """Counters for tests, bench/ and ``GET /_demo/stats``."""

    backend_type: str
    requests: Counter[tuple[str, str]] = field(default_factory=Counter)  # (user, command)
    responses: Counter[int] = field(default_factory=Counter)  # HTTP status of EAS answers
    device_info: dict[Owner, dict[str, str]] = field(default_factory=dict)
    redirected: Counter[str] = field(default_factory=Counter)  # 451s answered, by user
    # Every Authorization value of the last EAS request, as received (tests check
    # that exactly one reaches the backend); never in ``as_json``.
    last_authorization: tuple[str, ...] = ()

    @property
    def by_command(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for (_, command), n in self.requests.items():
            out[command] += n
        return out

    @property
    def by_user(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for (user, _), n in self.requests.items():
            out[user] += n
        return out

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    def as_json(self, held: int, abandoned: int = 0) -> dict[str, Any]:
        return {
            "backend_type": self.backend_type,
            "total": self.total,
            "held": held,
            "abandoned": abandoned,
            "by_command": dict(self.by_command),
            "by_user": dict(self.by_user),
            "requests": [
                {"user": u, "command": c, "count": n} for (u, c), n in sorted(self.requests.items())
            ],
            "responses": {str(k): v for k, v in sorted(self.responses.items())},
            "device_info": [
                {"user": u, "device_id": d, **info} for (u, d), info in self.device_info.items()
            ],
        }


@dataclass
class PolicyRecord:
    """Provisioning state of one (user, DeviceId): temporary and final keys."""

    pending: int | None = None
    final: int | None = None


@dataclass(frozen=True)
class PingParams:
    """What a Ping monitors; cached per device for empty Pings."""

    heartbeat: int
    folders: tuple[tuple[str, str], ...]  # (Id, Class)


class BackendState:
    """Everything one backend instance knows; handlers receive it explicitly."""

    def __init__(self, config: BackendConfig, now: dt.datetime | None = None) -> None:
        now = now or dt.datetime.now(dt.UTC)
        self.config = config
        self.mailboxes: dict[str, Mailbox] = {
            spec.user.casefold(): new_mailbox(*spec, messages=config.seed_messages, now=now)
            for spec in config.mailboxes
        }
        self.stats = BackendStats(config.backend_type)
        self.sync = SyncStates()
        self.hub = ChangeHub()
        self.policies: dict[Owner, PolicyRecord] = {}
        self.ping_cache: dict[Owner, PingParams] = {}
        self.sync_cache: dict[Owner, Element] = {}
        self.held_pings: dict[Owner, Waiter] = {}
        self.oof_enabled: dict[str, bool] = {}
        self.moved: dict[str, str] = {}  # user -> X-MS-Location: answered with 451

    def authenticate(self, username: str, password: str) -> Mailbox | None:
        """The mailbox for Basic credentials: user name or email, ``DOMAIN\\`` ignored."""
        box = self.find(username)
        return box if box is not None and box.password == password else None

    def find(self, name: str) -> Mailbox | None:
        """A mailbox by user name or email address (case-insensitive)."""
        key = name.rpartition("\\")[2].casefold()
        if key in self.mailboxes:
            return self.mailboxes[key]
        return next((b for b in self.mailboxes.values() if b.email.casefold() == key), None)

    def mailbox(self, user: str) -> Mailbox:
        """A mailbox by user name or email; KeyError when there is none."""
        box = self.find(user)
        if box is None:
            raise KeyError(user)
        return box

    def deliver(
        self,
        box: Mailbox,
        subject: str,
        body: str,
        *,
        sender: str,
        to: str | None = None,
        folder_type: FolderType = FolderType.Inbox,
    ) -> Message:
        """Store a message in one of ``box``'s folders and wake its held requests."""
        folder = box.folder(folder_type)
        msg = folder.add(
            subject, body, sender=sender, to=to or box.address, received=dt.datetime.now(dt.UTC)
        )
        self.hub.notify(box.user, folder.server_id)
        return msg

    def changed(self, box: Mailbox, folder_id: str) -> None:
        """A folder of ``box`` changed in place (read flag, delete): wake its waiters."""
        self.hub.notify(box.user, folder_id)
