"""The simulated devices and their EAS requests, encoded once.

Approach. A ``Session`` is one mailbox on one device (one association). The
population is ``devices`` DeviceIds and as many users; every
``second_mailbox_every``-th device also carries the next user's mailbox, so
some devices hold two associations, as phones with two accounts do.

Every request is built at start-up as raw HTTP/1.1 bytes (request line, the
headers a phone sends, WBXML body), so the load generator spends no time in
an encoder. The only per-request work is splicing a SyncKey into the two
bodies that carry one: a body is pre-encoded with a placeholder string and
split around it (inline strings in WBXML carry no length, so any key fits).

One *cycle* of a session is the mix, in this order (each a WBXML body):

1. Sync Inbox, SyncKey 0 (the server resets and issues a key);
2. GetItemEstimate for that key (3 pending);
3. Ping on the Inbox with a short heartbeat: the Inbox has changes the
   device has not synced, so it is answered at once (Status 2), as a Ping is
   when mail arrived;
4. Sync Inbox with that key and a BodyPreference: 3 mails with bodies;
5. SendMail (14.0+ ComposeMail, MIME as OPAQUE) to an outside recipient,
   so no mailbox grows during a run;
6. FolderSync, SyncKey 0: the whole hierarchy;
7. Provision, initial request with DeviceInformation.

The demo backend runs with ``require_provisioning=False``, so no policy key
has to be carried; the state a cycle leaves behind is the same as the one it
found, so every phase of a run puts the same work on the backend.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

from sentry.eas.wbxml import Element, encode

__all__ = [
    "CYCLE",
    "EXPECTED_STATUS",
    "Bodies",
    "Session",
    "SessionRequests",
    "held_ping",
    "make_bodies",
    "make_sessions",
    "sync_key_of",
]

PATH = "/Microsoft-Server-ActiveSync"
VERSION = "16.1"
PASSWORD = "bench-pw"
DOMAIN = "bench.example"
INBOX = "1"
KEY_SLOT = "\u00a7KEY\u00a7"
CYCLE = ("Sync", "GetItemEstimate", "Ping", "Sync", "SendMail", "FolderSync", "Provision")
# Where each step's answer carries its Status, and the value expected (checked during
# warm-up); None: an empty body (SendMail success).
_COLLECTION_STATUS = ("Collections", "Collection", "Status")
EXPECTED_STATUS: tuple[tuple[tuple[str, ...], int] | None, ...] = (
    (_COLLECTION_STATUS, 1),
    (("Response", "Status"), 1),
    (("Status",), 2),
    (_COLLECTION_STATUS, 1),
    None,
    (("Status",), 1),
    (("Status",), 1),
)
_SYNC_KEY = re.compile(rb"\x4b\x03([0-9]+)\x00")  # AirSync SyncKey with inline string


@dataclass(frozen=True)
class Session:
    """One association: a mailbox on a device."""

    device_id: str
    user: str
    device_type: str = "iPhone"


def make_sessions(devices: int, second_mailbox_every: int = 10) -> list[Session]:
    """``devices`` DeviceIds and users; every n-th device gets a second mailbox."""
    sessions = [Session(f"BENCH{i:06d}", f"user{i:06d}") for i in range(devices)]
    if second_mailbox_every > 0 and devices > 1:
        for i in range(0, devices, second_mailbox_every):
            sessions.append(Session(f"BENCH{i:06d}", f"user{(i + 1) % devices:06d}"))
    return sessions


def users_of(sessions: list[Session]) -> list[str]:
    return sorted({s.user for s in sessions})


def el(namespace: str, tag: str, *content: Element | str | bytes) -> Element:
    return Element(namespace, tag, content)


def _sync(key: str, fetch: bool) -> Element:
    a = "AirSync"
    parts = [el(a, "SyncKey", key), el(a, "CollectionId", INBOX)]
    if fetch:
        pref = el(
            "AirSyncBase",
            "BodyPreference",
            el("AirSyncBase", "Type", "1"),
            el("AirSyncBase", "TruncationSize", "5120"),
        )
        parts += [el(a, "WindowSize", "25"), el(a, "Options", el(a, "FilterType", "3"), pref)]
    return el(a, "Sync", el(a, "Collections", el(a, "Collection", *parts)))


def _estimate(key: str) -> Element:
    g = "GetItemEstimate"
    collection = el(
        g,
        "Collection",
        el("AirSync", "SyncKey", key),
        el(g, "CollectionId", INBOX),
        el("AirSync", "Options", el("AirSync", "FilterType", "3")),
    )
    return el(g, "GetItemEstimate", el(g, "Collections", collection))


def _ping(heartbeat: int) -> Element:
    p = "Ping"
    folder = el(p, "Folder", el(p, "Id", INBOX), el(p, "Class", "Email"))
    return el(p, "Ping", el(p, "HeartbeatInterval", str(heartbeat)), el(p, "Folders", folder))


def _send_mail() -> Element:
    mime = (
        f"From: device@{DOMAIN}\r\nTo: someone@outside.invalid\r\n"
        "Subject: quarterly numbers\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n" + "The numbers are in. " * 60 + "\r\n"
    ).encode()
    c = "ComposeMail"
    return el(c, "SendMail", el(c, "ClientId", "bench-1"), el(c, "Mime", mime))


def _folder_sync() -> Element:
    return el("FolderHierarchy", "FolderSync", el("FolderHierarchy", "SyncKey", "0"))


def _provision() -> Element:
    s = "Settings"
    info = [
        el(s, "Model", "iPhone15,2"),
        el(s, "IMEI", "356938035643809"),
        el(s, "FriendlyName", "Bench phone"),
        el(s, "OS", "iOS 17.4"),
        el(s, "OSLanguage", "en-US"),
        el(s, "UserAgent", "Apple-iPhone15C2/2104.1"),
    ]
    policy = el("Provision", "Policy", el("Provision", "PolicyType", "MS-EAS-Provisioning-WBXML"))
    return el(
        "Provision",
        "Provision",
        el(s, "DeviceInformation", el(s, "Set", *info)),
        el("Provision", "Policies", policy),
    )


def _split(tree: Element) -> tuple[bytes, bytes]:
    data = encode(tree)
    before, found, after = data.partition(KEY_SLOT.encode())
    assert found, "key slot missing"
    return before, after


@dataclass(frozen=True)
class Bodies:
    """The WBXML bodies of a cycle, encoded once for every session."""

    static: dict[int, bytes]
    templates: dict[int, tuple[bytes, bytes]]


def make_bodies(heartbeat: int) -> Bodies:
    """Encode every body of the cycle (Ping with ``heartbeat`` seconds)."""
    return Bodies(
        static={
            0: encode(_sync("0", fetch=False)),
            2: encode(_ping(heartbeat)),
            4: encode(_send_mail()),
            5: encode(_folder_sync()),
            6: encode(_provision()),
        },
        templates={1: _split(_estimate(KEY_SLOT)), 3: _split(_sync(KEY_SLOT, fetch=True))},
    )


class SessionRequests:
    """The raw requests of one session: static bytes, or head + body around a key."""

    def __init__(self, session: Session, host: str, bodies: Bodies) -> None:
        self.session = session
        auth = base64.b64encode(f"{session.user}:{PASSWORD}".encode()).decode()
        self._head = (
            f"Host: {host}\r\nAuthorization: Basic {auth}\r\nMS-ASProtocolVersion: {VERSION}\r\n"
            "User-Agent: Apple-iPhone15C2/2104.1\r\n"
            "Content-Type: application/vnd.ms-sync.wbxml\r\n"
        )
        self._lines = {
            cmd: (
                f"POST {PATH}?Cmd={cmd}&User={session.user}&DeviceId={session.device_id}"
                f"&DeviceType={session.device_type} HTTP/1.1\r\n"
            )
            for cmd in set(CYCLE)
        }
        self.static = {step: self.build(CYCLE[step], body) for step, body in bodies.static.items()}
        self._templates = bodies.templates

    def build(self, command: str, body: bytes) -> bytes:
        head = f"{self._lines[command]}{self._head}Content-Length: {len(body)}\r\n\r\n"
        return head.encode() + body

    def request(self, step: int, key: str) -> bytes:
        """The bytes of step ``step`` of the cycle, with SyncKey ``key`` where needed."""
        static = self.static.get(step)
        if static is not None:
            return static
        before, after = self._templates[step]
        return self.build(CYCLE[step], before + key.encode() + after)


def held_ping(session: Session, host: str, heartbeat: int) -> bytes:
    """A Ping request of ``session`` with ``heartbeat`` seconds (held-pings scenarios)."""
    return SessionRequests(session, host, make_bodies(heartbeat)).static[2]


def sync_key_of(response_body: bytes) -> str:
    """The first AirSync SyncKey in a Sync response ("0" when there is none)."""
    match = _SYNC_KEY.search(response_body)
    return match.group(1).decode() if match else "0"
