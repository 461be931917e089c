"""Shared vocabulary of the demo backend's command handlers.

Approach. The HTTP shell (``backend.py``) turns each authenticated POST into
a frozen ``Call``; a handler is ``async (state, call) -> Reply`` and never
touches aiohttp. A ``Reply`` is an HTTP status, an optional WBXML ``Element``
(or raw bytes) and extra headers; the shell encodes it. Element builders here
keep handlers short: ``el(ns, tag, *children)`` drops ``None`` children so
optional elements can be written inline.

``COMMAND_ROOTS`` records, per command, the namespace and root element of its
response and whether that root has a top-level Status (MS-ASCMD 2.2.3.177;
eas-protocol.md §4.2). ``command_status`` uses it for command-level errors
such as 142 DeviceNotProvisioned or 137 CommandNotSupported.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum

from sentry.eas.wbxml import Content, Element

from .mailbox import Mailbox, Owner
from .state import BackendState

__all__ = [
    "COMMAND_ROOTS",
    "Call",
    "Handler",
    "Reply",
    "command_status",
    "el",
    "leaf",
    "status",
    "version_at_least",
]

# command -> (namespace, root tag); only commands whose root carries a Status.
COMMAND_ROOTS: Mapping[str, tuple[str, str]] = {
    "Sync": ("AirSync", "Sync"),
    "FolderSync": ("FolderHierarchy", "FolderSync"),
    "FolderCreate": ("FolderHierarchy", "FolderCreate"),
    "FolderUpdate": ("FolderHierarchy", "FolderUpdate"),
    "FolderDelete": ("FolderHierarchy", "FolderDelete"),
    "GetItemEstimate": ("GetItemEstimate", "GetItemEstimate"),
    "MoveItems": ("Move", "MoveItems"),
    "Ping": ("Ping", "Ping"),
    "Provision": ("Provision", "Provision"),
    "Search": ("Search", "Search"),
    "Settings": ("Settings", "Settings"),
    "ItemOperations": ("ItemOperations", "ItemOperations"),
    "SendMail": ("ComposeMail", "SendMail"),
    "SmartForward": ("ComposeMail", "SmartForward"),
    "SmartReply": ("ComposeMail", "SmartReply"),
    "ResolveRecipients": ("ResolveRecipients", "ResolveRecipients"),
    "ValidateCert": ("ValidateCert", "ValidateCert"),
    "Find": ("Find", "Find"),
}


@dataclass(frozen=True)
class Call:
    """One authenticated EAS POST as the handlers see it."""

    command: str
    mailbox: Mailbox
    device_id: str
    device_type: str
    version: str  # MS-ASProtocolVersion, e.g. "16.1"
    policy_key: int | None
    params: Mapping[str, str]
    body: Element | None  # decoded WBXML; None for an empty or MIME body
    raw: bytes = b""

    @property
    def owner(self) -> Owner:
        return (self.mailbox.user, self.device_id)

    def at_least(self, version: str) -> bool:
        return version_at_least(self.version, version)


@dataclass(frozen=True)
class Reply:
    """What a handler answers: HTTP status, body (WBXML tree, raw bytes or none), headers."""

    body: Element | bytes | None = None
    http_status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)


Handler = Callable[[BackendState, Call], Awaitable[Reply]]


def version_at_least(version: str, minimum: str) -> bool:
    """Compare EAS protocol versions numerically ("12.1" < "14.0" < "16.1")."""

    def parse(v: str) -> tuple[int, ...]:
        return tuple(int(p) for p in v.split("."))

    return parse(version) >= parse(minimum)


def el(namespace: str, tag: str, *content: Content | None) -> Element:
    """An element with the given children; ``None`` children are dropped."""
    return Element(namespace, tag, tuple(c for c in content if c is not None))


def leaf(namespace: str, tag: str, value: str | int) -> Element:
    """An element holding one inline string (integers as decimal text, MS-ASDTYPE 2.6)."""
    return Element(namespace, tag, (str(value),))


def status(namespace: str, value: IntEnum) -> Element:
    """``<Status>n</Status>`` in ``namespace``."""
    return leaf(namespace, "Status", int(value))


def command_status(command: str, value: IntEnum) -> Reply | None:
    """``<Root><Status>n</Status></Root>`` for ``command``, or None when its
    response has no top-level Status (MeetingResponse, GetAttachment)."""
    root = COMMAND_ROOTS.get(command)
    if root is None:
        return None
    namespace, tag = root
    return Reply(el(namespace, tag, status(namespace, value)))
