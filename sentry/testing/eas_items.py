"""Mail items on the wire: Email ApplicationData, ItemOperations Fetch, SendMail.

Approach. ``email_fields`` renders one ``Message`` as the Email-page and
AirSyncBase elements Exchange sends for a mail item (in Exchange's order), and
is shared by Sync (Add) and ItemOperations (Properties). The body honours the
client's first BodyPreference: plain text (1), HTML (2) or MIME (4, also
chosen by MIMESupport 2); RTF falls back to plain text. TruncationSize cuts
the data and sets Truncated; EstimatedDataSize is always the full size.

SendMail takes the 14.0+ ComposeMail WBXML form (MIME as OPAQUE) or, before
14.0, the raw RFC 822 body with ``SaveInSent=T`` in the query. The message is
kept in Sent Items when the client asks (SaveInSentItems, as Exchange does)
and delivered to the Inbox of every recipient that is a mailbox of this
backend, which wakes that mailbox's held Pings. Success is HTTP 200 with an
empty body; failures are ComposeMail Status values (common codes) at 14.0+
and HTTP 400 before.
"""

from __future__ import annotations

import email
import email.policy
import html
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, make_msgid, parseaddr
from enum import IntEnum

from sentry.eas.status import CommonStatus
from sentry.eas.wbxml import Element

from .mailbox import FolderType, Mailbox, Message
from .state import BackendState
from .wire import Call, Reply, command_status, el, leaf, status

__all__ = [
    "BodyPreference",
    "BodyType",
    "ItemOperationsStatus",
    "body_preference",
    "email_fields",
    "find_message",
    "item_operations",
    "render_body",
    "send_mail",
]

AS, ASB, EM, IO, CM = "AirSync", "AirSyncBase", "Email", "ItemOperations", "ComposeMail"


class BodyType(IntEnum):
    """AirSyncBase Type (MS-ASAIRS 2.2.2.22.1)."""

    PlainText = 1
    HTML = 2
    RTF = 3
    MIME = 4


class ItemOperationsStatus(IntEnum):
    """ItemOperations Status values used here (MS-ASCMD 2.2.3.177.8)."""

    Success = 1
    ProtocolError = 2
    ObjectNotFound = 6
    StoreUnknown = 9
    AttachmentOrFileReferenceInvalid = 15


@dataclass(frozen=True, slots=True)
class BodyPreference:
    """What body the client asked for."""

    type: BodyType = BodyType.PlainText
    truncation: int | None = None


def body_preference(options: Element | None) -> BodyPreference:
    """The body a Sync/Fetch Options element asks for: its first BodyPreference,
    or its Type 4 one when MIMESupport is 2 (MIME for all messages)."""
    if options is None:
        return BodyPreference()
    prefs = list(options.iter_children("BodyPreference", ASB))
    mime = options.child_text("MIMESupport", AS) == "2"
    chosen = next((p for p in prefs if _body_type(p) == BodyType.MIME), None) if mime else None
    pref = chosen or (prefs[0] if prefs else None)
    if pref is None:
        return BodyPreference(BodyType.MIME if mime else BodyType.PlainText)
    size = pref.child_text("TruncationSize", ASB) or ""
    return BodyPreference(_body_type(pref), int(size) if size.isdigit() else None)


def _body_type(pref: Element) -> BodyType:
    """The Type of a BodyPreference; RTF and unknown types become plain text."""
    try:
        wanted = BodyType(int(pref.child_text("Type", ASB) or BodyType.PlainText))
    except ValueError:
        return BodyType.PlainText
    return BodyType.PlainText if wanted == BodyType.RTF else wanted


def _mime(msg: Message) -> str:
    mime = EmailMessage()
    mime["From"] = msg.sender
    mime["To"] = msg.to
    mime["Subject"] = msg.subject
    mime["Date"] = format_datetime(msg.received)
    mime["Message-ID"] = make_msgid(domain="demo.invalid")
    mime.set_content(msg.body)
    return mime.as_bytes(policy=email.policy.SMTP).decode("ascii", "replace")


def _body_data(msg: Message, body_type: BodyType) -> str:
    if body_type == BodyType.HTML:
        return f"<html><body><pre>{html.escape(msg.body)}</pre></body></html>"
    if body_type == BodyType.MIME:
        return _mime(msg)
    return msg.body


def render_body(msg: Message, pref: BodyPreference) -> Element:
    """The AirSyncBase Body element: Type, EstimatedDataSize, [Truncated], Data."""
    data = _body_data(msg, pref.type).encode("utf-8")
    truncated = pref.truncation is not None and len(data) > pref.truncation
    shown = data[: pref.truncation] if truncated else data
    return el(
        ASB,
        "Body",
        leaf(ASB, "Type", pref.type),
        leaf(ASB, "EstimatedDataSize", len(data)),
        leaf(ASB, "Truncated", 1) if truncated else None,
        leaf(ASB, "Data", shown.decode("utf-8", "ignore")) if shown else None,
    )


def email_fields(msg: Message, pref: BodyPreference) -> tuple[Element, ...]:
    """Email ApplicationData of a message, in the order Exchange sends it."""
    display_to = parseaddr(msg.to)[0] or parseaddr(msg.to)[1]
    return (
        leaf(EM, "To", msg.to),
        leaf(EM, "From", msg.sender),
        leaf(EM, "Subject", msg.subject),
        leaf(EM, "DateReceived", msg.received.strftime("%Y-%m-%dT%H:%M:%S.000Z")),
        leaf(EM, "DisplayTo", display_to),
        leaf(EM, "ThreadTopic", msg.subject),
        leaf(EM, "Importance", 1),
        leaf(EM, "Read", int(msg.read)),
        render_body(msg, pref),
        leaf(EM, "MessageClass", msg.message_class),
        leaf(EM, "InternetCPID", 65001),
        leaf(EM, "ContentClass", "urn:content-classes:message"),
        leaf(ASB, "NativeBodyType", BodyType.PlainText),
    )


def find_message(box: Mailbox, collection_id: str | None, server_id: str) -> Message | None:
    """A message by ServerId, in the given folder or (without one) in any folder."""
    folders = [box.folders.get(collection_id)] if collection_id else list(box.folders.values())
    for folder in folders:
        if folder is not None and server_id in folder.items:
            return folder.items[server_id]
    return None


async def item_operations(state: BackendState, call: Call) -> Reply:
    """ItemOperations: Fetch of mail items by CollectionId + ServerId."""
    body = call.body
    if body is None or body.tag != "ItemOperations":
        return Reply(el(IO, "ItemOperations", status(IO, ItemOperationsStatus.ProtocolError)))
    fetched = [_fetch(call.mailbox, f) for f in body.iter_children("Fetch", IO)]
    return Reply(
        el(
            IO,
            "ItemOperations",
            status(IO, ItemOperationsStatus.Success),
            el(IO, "Response", *fetched),
        )
    )


def _fetch(box: Mailbox, fetch: Element) -> Element:
    store = fetch.child_text("Store", IO) or "Mailbox"
    if store.casefold() != "mailbox":
        return el(IO, "Fetch", status(IO, ItemOperationsStatus.StoreUnknown))
    if fetch.find("FileReference", ASB) is not None:
        return el(IO, "Fetch", status(IO, ItemOperationsStatus.AttachmentOrFileReferenceInvalid))
    collection_id = fetch.child_text("CollectionId", AS)
    server_id = fetch.child_text("ServerId", AS) or ""
    msg = find_message(box, collection_id, server_id)
    ids = (
        leaf(AS, "CollectionId", collection_id) if collection_id else None,
        leaf(AS, "ServerId", server_id),
    )
    if msg is None:
        return el(IO, "Fetch", status(IO, ItemOperationsStatus.ObjectNotFound), *ids)
    properties = el(IO, "Properties", *email_fields(msg, body_preference(fetch.find("Options"))))
    return el(
        IO,
        "Fetch",
        status(IO, ItemOperationsStatus.Success),
        *ids,
        leaf(AS, "Class", "Email"),
        properties,
    )


async def send_mail(state: BackendState, call: Call) -> Reply:
    """SendMail: store in Sent Items when asked, deliver to local recipients."""
    if call.at_least("14.0"):
        parsed = _compose_mail(call.body)
        if isinstance(parsed, CommonStatus):
            return command_status("SendMail", parsed) or Reply(http_status=400)
        mime, save = parsed
    else:
        mime, save = call.raw, call.params.get("SaveInSent", "F").upper() == "T"
    outcome = _submit(state, call.mailbox, mime, save)
    if outcome is None:
        return Reply()
    if call.at_least("14.0"):
        return command_status("SendMail", outcome) or Reply(http_status=400)
    return Reply(http_status=400)


def _compose_mail(body: Element | None) -> tuple[bytes, bool] | CommonStatus:
    if body is None or body.tag != "SendMail":
        return CommonStatus.InvalidContent
    mime = body.find("Mime", CM)
    raw = None if mime is None else (mime.opaque or (mime.text or "").encode("utf-8"))
    if not raw:
        return CommonStatus.InvalidContent
    return raw, body.find("SaveInSentItems", CM) is not None


def _submit(state: BackendState, box: Mailbox, mime: bytes, save: bool) -> CommonStatus | None:
    """Deliver a MIME message; None on success, else the failure status."""
    parsed = email.message_from_bytes(mime, policy=email.policy.default)
    if not isinstance(parsed, EmailMessage) or not parsed.keys():
        return CommonStatus.InvalidMIME
    headers = [str(parsed.get(h, "")) for h in ("To", "Cc", "Bcc")]
    recipients = [addr for _, addr in getaddresses(headers) if addr]
    if not recipients:
        return CommonStatus.MessageHasNoRecipient
    subject, text = str(parsed.get("Subject", "")), _text_of(parsed)
    to = str(parsed.get("To", ""))
    if save:
        state.deliver(
            box, subject, text, sender=box.address, to=to, folder_type=FolderType.SentItems
        )
    local = {b.user: b for r in recipients if (b := state.find(r)) is not None}
    for target in local.values():
        state.deliver(target, subject, text, sender=box.address, to=to)
    return None


def _text_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    try:
        content = part.get_content()
    except (LookupError, ValueError):
        return ""
    return content if isinstance(content, str) else ""
