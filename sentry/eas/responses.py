"""Answers the gateway gives itself, as plain values: refusals, wipes, errors, OPTIONS.

Approach (eas-protocol.md §4.2-4.3, design.md §4). A ``Response`` is status,
reason phrase, headers and body bytes; the HTTP shell only writes it out.
Every answer built here carries what a server's answer carries
(``MS-Server-ActiveSync`` and ``Cache-Control: private``, MS-ASHTTP
2.2.2.1.2), so a device cannot tell the gateway's own answers from its mail
server's by their headers. A refusal speaks the client's language:

* protocol 14.0+ and a command whose response has a top-level Status: HTTP 200
  with ``<Command><Status>N</Status></Command>`` in the command's own code
  page (MeetingResponse has none, so its Status goes in ``Result``);
* older or unknown protocol, GetAttachment, the legacy plain-only commands and
  mail sent as a MIME body: HTTP 403 with an empty body, "not enabled for
  ActiveSync" (never 401, which makes clients re-prompt for the password).

A wipe acknowledgement is answered as MS-ASPROV 3.2.5.1.2.2 says: Status 1
when the client reports success, Status 2 and the wipe directive again when
it reports failure. Errors the gateway raises itself (a malformed request,
an oversized body, no healthy backend) are ``error``: the status line with
its reason phrase, the two server headers, and one line of text naming the
problem (and, for a malformed request, the EAS common status that describes
it, e.g. ``DeviceIdMissingOrInvalid (108)``). Bodies without content carry
the WBXML content type, as Z-Push does, because some devices choke on a
default ``text/html``.

Where the Status lives is one table, ``_STATUS_PATH``; bodies are built as
``Element`` trees and encoded, so the bytes follow the code-page tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus

from .errors import EasError, MethodError
from .request import Command
from .status import CommonStatus, PingStatus, ProvisionStatus, WipeAckStatus
from .versions import PROTOCOL_VERSIONS, at_least
from .wbxml import Element, encode

__all__ = [
    "ALLOW",
    "REFUSAL_COMMANDS",
    "RETRY_AFTER_PROVISION",
    "SERVER_HEADERS",
    "SERVER_VERSION",
    "WBXML_CONTENT_TYPE",
    "Response",
    "bad_request",
    "error",
    "forbidden",
    "options_response",
    "poll_ended",
    "provision_required",
    "refusal",
    "remote_wipe",
    "wipe_acknowledged",
    "wipe_requested",
]

WBXML_CONTENT_TYPE = "application/vnd.ms-sync.wbxml"
ALLOW = "OPTIONS,POST"
SERVER_VERSION = "15.1"  # MS-Server-ActiveSync: a server build, not a protocol version
RETRY_AFTER_PROVISION = 449  # legacy "retry after sending a Provision" (eas-protocol.md §1.6)
SERVER_HEADERS: tuple[tuple[str, str], ...] = (
    ("MS-Server-ActiveSync", SERVER_VERSION),
    ("Cache-Control", "private"),
)
"""Headers on every answer the gateway makes itself (MS-ASHTTP 2.2.2.1.2)."""
_OK = HTTPStatus.OK.value
_FORBIDDEN = HTTPStatus.FORBIDDEN.value
# EAS statuses HTTP does not name (MS-ASHTTP 2.2.2.1.1); the rest use http.HTTPStatus.
_EAS_REASONS = {
    RETRY_AFTER_PROVISION: "Retry after sending a PROVISION command",
    451: "Redirect",
    456: "Account blocked",
    457: "Password expired",
}
_MAX_MESSAGE = 300  # characters of an error message sent to the device


@dataclass(frozen=True, slots=True)
class Response:
    """An HTTP response as data; the shell adds Content-Length when it writes it."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        return next((v for k, v in self.headers if k.lower() == wanted), None)

    @property
    def reason(self) -> str:
        """The reason phrase of the status line (``Bad Request``)."""
        known = _EAS_REASONS.get(self.status)
        if known is not None:
            return known
        try:
            return HTTPStatus(self.status).phrase
        except ValueError:
            return ""


# Command -> (namespace, root tag, path from the root to the element holding Status).
_STATUS_PATH: Mapping[Command, tuple[str, str, tuple[str, ...]]] = {
    Command.Sync: ("AirSync", "Sync", ()),
    Command.FolderSync: ("FolderHierarchy", "FolderSync", ()),
    Command.FolderCreate: ("FolderHierarchy", "FolderCreate", ()),
    Command.FolderUpdate: ("FolderHierarchy", "FolderUpdate", ()),
    Command.FolderDelete: ("FolderHierarchy", "FolderDelete", ()),
    Command.GetItemEstimate: ("GetItemEstimate", "GetItemEstimate", ()),
    Command.MoveItems: ("Move", "MoveItems", ()),
    Command.MeetingResponse: ("MeetingResponse", "MeetingResponse", ("Result",)),
    Command.Ping: ("Ping", "Ping", ()),
    Command.Provision: ("Provision", "Provision", ()),
    Command.Search: ("Search", "Search", ()),
    Command.Settings: ("Settings", "Settings", ()),
    Command.ItemOperations: ("ItemOperations", "ItemOperations", ()),
    Command.SendMail: ("ComposeMail", "SendMail", ()),
    Command.SmartForward: ("ComposeMail", "SmartForward", ()),
    Command.SmartReply: ("ComposeMail", "SmartReply", ()),
    Command.ResolveRecipients: ("ResolveRecipients", "ResolveRecipients", ()),
    Command.ValidateCert: ("ValidateCert", "ValidateCert", ()),
    Command.Find: ("Find", "Find", ()),
}
REFUSAL_COMMANDS: frozenset[Command] = frozenset(_STATUS_PATH)
"""Commands that can carry a WBXML Status refusal (from protocol 14.0 on)."""
_MIME_COMMANDS = frozenset({Command.SendMail, Command.SmartForward, Command.SmartReply})
_WBXML_HEADERS = (*SERVER_HEADERS, ("Content-Type", WBXML_CONTENT_TYPE))
_TEXT_HEADERS = (*SERVER_HEADERS, ("Content-Type", "text/plain; charset=utf-8"))


def _status_body(command: Command, status: int) -> bytes:
    """``<Root>[<path…>]<Status>N</Status>[</path…>]</Root>`` in the command's page."""
    namespace, root, path = _STATUS_PATH[command]
    node = Element(namespace, "Status", (str(int(status)),))
    for tag in reversed(path):
        node = Element(namespace, tag, (node,))
    return encode(Element(namespace, root, (node,)))


def _has_wbxml_status(command: Command, version: str | None, mime_body: bool) -> bool:
    if command not in REFUSAL_COMMANDS or not at_least(version, 14, 0):
        return False
    return not (mime_body and command in _MIME_COMMANDS)


def refusal(
    command: Command, version: str | None, status: CommonStatus, *, mime_body: bool = False
) -> Response:
    """Refuse a request the way its client understands (module docstring).

    ``mime_body``: the request carried a MIME message (``message/rfc822``)
    rather than WBXML, so no WBXML answer is expected.
    """
    if not _has_wbxml_status(command, version, mime_body):
        return forbidden()
    return Response(_OK, _WBXML_HEADERS, _status_body(command, status))


def forbidden() -> Response:
    """HTTP 403, "not enabled for ActiveSync", with an empty body (never 401)."""
    return Response(_FORBIDDEN, _WBXML_HEADERS, b"")


def _provision(status: ProvisionStatus, directive: str | None) -> Response:
    children: list[Element] = [Element("Provision", "Status", (str(int(status)),))]
    if directive is not None:
        children.append(Element("Provision", directive))
    return Response(_OK, _WBXML_HEADERS, encode(Element("Provision", "Provision", tuple(children))))


def _directive(account_only: bool) -> str:
    return "AccountOnlyRemoteWipe" if account_only else "RemoteWipe"


def remote_wipe(account_only: bool = False) -> Response:
    """The Provision response that orders a wipe (MS-ASPROV 3.2.5.1.1).

    ``account_only`` sends ``AccountOnlyRemoteWipe`` (16.1 clients only).
    """
    return _provision(ProvisionStatus.Success, _directive(account_only))


def wipe_acknowledged(status: WipeAckStatus, account_only: bool = False) -> Response:
    """The answer to a wipe acknowledgement (MS-ASPROV 3.2.5.1.2.2).

    The client reported success: Provision Status 1, nothing else. It reported
    failure: Provision Status 2 and the directive again (``AccountOnlyRemoteWipe``
    for an account-only wipe), so it tries once more.
    """
    if status is WipeAckStatus.Succeeded:
        return _provision(ProvisionStatus.Success, None)
    return _provision(ProvisionStatus.WipeFailed, _directive(account_only))


def wipe_requested(
    command: Command, version: str | None, *, account_only: bool = False, mime_body: bool = False
) -> Response:
    """Tell a device with a pending wipe to provision, where it gets the wipe.

    Provision itself gets ``remote_wipe``. Other commands get Status 140
    RemoteWipeRequested where a WBXML Status is possible; otherwise (before
    14.0, GetAttachment, MIME mail) HTTP 449, the legacy "provision first"
    signal, since a 403 would leave the device unwiped.
    """
    if command is Command.Provision:
        return remote_wipe(account_only)
    if not _has_wbxml_status(command, version, mime_body):
        return Response(RETRY_AFTER_PROVISION, _WBXML_HEADERS, b"")
    return refusal(command, version, CommonStatus.RemoteWipeRequested)


def provision_required(
    command: Command, version: str | None, status: CommonStatus, *, mime_body: bool = False
) -> Response:
    """Tell a device to provision first (MS-ASPROV 3.1.5; eas-protocol.md §3.1):
    ``status`` (142 DeviceNotProvisioned, 144 InvalidPolicyKey) as the command's
    own Status from 14.0 on, HTTP 449 where no WBXML Status is possible."""
    if not _has_wbxml_status(command, version, mime_body):
        return Response(RETRY_AFTER_PROVISION, _WBXML_HEADERS, b"")
    return refusal(command, version, status)


def poll_ended(command: Command) -> Response:
    """End a held long poll with "nothing changed, ask again" (gateway shutdown).

    Ping gets Status 1 (heartbeat expired, no changes; MS-ASCMD 2.2.3.177.11),
    a long-poll Sync the empty 200 response (no changes; MS-ASCMD 2.2.1.21).
    The client re-issues the request, to another node if this one is gone.
    """
    if command is Command.Ping:
        status = Element("Ping", "Status", (str(int(PingStatus.HeartbeatExpired)),))
        return Response(_OK, _WBXML_HEADERS, encode(Element("Ping", "Ping", (status,))))
    return Response(_OK, _WBXML_HEADERS, b"")


def options_response(
    versions: Iterable[str] = PROTOCOL_VERSIONS,
    commands: Iterable[Command] = tuple(Command),
    *,
    server_version: str = SERVER_VERSION,
) -> Response:
    """The answer to OPTIONS (MS-ASHTTP 2.2.4.1.2): 200, empty body, capabilities."""
    headers = (
        ("MS-Server-ActiveSync", server_version),
        ("Cache-Control", "private"),
        ("Allow", ALLOW),
        ("Public", ALLOW),
        ("MS-ASProtocolVersions", ",".join(versions)),
        ("MS-ASProtocolCommands", ",".join(c.value for c in commands)),
    )
    return Response(_OK, headers, b"")


def error(status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> Response:
    """An error the gateway answers itself: ``status``, the server headers and
    one line of text (control characters folded, at most ~300 characters)."""
    line = " ".join(message.split())
    if len(line) > _MAX_MESSAGE:
        line = line[: _MAX_MESSAGE - 1] + "…"
    return Response(status, (*_TEXT_HEADERS, *headers), (line + "\n").encode("utf-8"))


def bad_request(problem: EasError) -> Response:
    """A malformed request: ``problem.http_status`` (400, or 405 with ``Allow``),
    its message prefixed by the EAS status that names it (``DeviceIdMissingOrInvalid
    (108): ...``)."""
    message = problem.message
    if problem.eas_status is not None:
        status = problem.eas_status
        message = f"{status.name} ({int(status)}): {message}"
    extra = (("Allow", ALLOW),) if isinstance(problem, MethodError) else ()
    return error(problem.http_status, message, extra)
