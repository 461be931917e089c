"""EAS request parsing: method + raw query + headers -> one frozen ``EasRequest``.

(Types first; the parser follows below them.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

__all__ = [
    "Command",
    "EasRequest",
    "Identity",
    "QueryForm",
]


class QueryForm(Enum):
    """Which of the two MS-ASHTTP query encodings a request used."""

    PLAIN = "plain"
    BASE64 = "base64"
    NONE = "none"  # OPTIONS without a query


class Command(Enum):
    """EAS commands, with their base64-form command code (None: plain form only)."""

    Sync = "Sync"
    SendMail = "SendMail"
    SmartForward = "SmartForward"
    SmartReply = "SmartReply"
    GetAttachment = "GetAttachment"
    GetHierarchy = "GetHierarchy"
    CreateCollection = "CreateCollection"
    DeleteCollection = "DeleteCollection"
    MoveCollection = "MoveCollection"
    FolderSync = "FolderSync"
    FolderCreate = "FolderCreate"
    FolderDelete = "FolderDelete"
    FolderUpdate = "FolderUpdate"
    MoveItems = "MoveItems"
    GetItemEstimate = "GetItemEstimate"
    MeetingResponse = "MeetingResponse"
    Search = "Search"
    Settings = "Settings"
    Ping = "Ping"
    ItemOperations = "ItemOperations"
    Provision = "Provision"
    ResolveRecipients = "ResolveRecipients"
    ValidateCert = "ValidateCert"
    Find = "Find"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a request is for.

    ``key`` is the canonical principal used in association keys: the account
    name case-folded, without ``DOMAIN\\`` or ``@domain`` (so ``CORP\\JDoe``,
    ``jdoe@corp.example`` and ``jdoe`` are one user). ``domain`` is what the
    raw form carried (NetBIOS domain or UPN suffix, lower-cased) and ``raw`` the
    name exactly as sent, kept for logs. ``source`` says where it came from.
    """

    key: str
    raw: str
    domain: str | None = None
    source: str = "query"  # "authorization" | "query"


@dataclass(frozen=True, slots=True)
class EasRequest:
    """One parsed EAS request: everything access control needs, nothing I/O."""

    method: str  # "POST" or "OPTIONS"
    command: Command | None  # None only for OPTIONS
    user: Identity | None  # None only for an OPTIONS without credentials/query
    device_id: str  # canonical (see canonical_device_id); "" for OPTIONS
    device_id_raw: str
    device_type: str
    protocol_version: str | None  # "14.1"; None when the client did not say
    policy_key: int | None  # None: not sent; 0: "not provisioned"
    locale: int | None  # LCID, base64 form only
    params: Mapping[str, str] = field(default_factory=dict)  # command parameters
    query_form: QueryForm = QueryForm.PLAIN
    query_user: str | None = None  # the query's User value as sent, for logs
    user_agent: str | None = None
    content_type: str | None = None
    is_throwaway_device: bool = False  # DeviceId "validate" etc.: no association
