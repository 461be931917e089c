"""EAS request parsing: method + raw query + headers -> one frozen ``EasRequest``.

Approach (eas-protocol.md §1, §6). Both MS-ASHTTP query forms are normalised
here, in one place, so nothing downstream knows which one a client used:

1. The method must be POST or OPTIONS. OPTIONS is capability discovery: what
   its query carries is parsed and checked, but nothing is required and the
   command is ignored (``command`` is None).
2. A query naming ``Cmd``/``DeviceId``/``DeviceType``/``User`` is the plain
   form; anything else is percent-decoded and base64-decoded (standard or
   URL-safe alphabet, padding optional) and read with the §1.3.1 byte layout
   by ``_b64query``, which bounds-checks every length byte.
3. Version and policy key come from the blob in the base64 form and from the
   ``MS-ASProtocolVersion`` / ``X-MS-PolicyKey`` headers otherwise.
4. The DeviceId is canonicalised (§6.2) and the user resolved (§6.1): the
   ``Authorization: Basic`` name wins over the query ``User``; either is
   reduced to its canonical principal under the configured realms
   (``identity.py``, ``sentry.model.canonical_principal``). The password is
   never kept. This is the parser's view only: the gateway keys its decision
   on the identity its authentication step (``sentry.proxy.authn``) takes
   from the one Authorization header, Basic or a validated Bearer token.

Every malformed input raises a ``RequestError`` subclass carrying its wire
status; no other exception escapes ``parse_request``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from urllib.parse import parse_qsl

from sentry.model import NO_REALMS, THROWAWAY_DEVICE_IDS, Realms
from sentry.slots import fast_constructor

from ._b64query import OPTION_BITS, PARAM_BY_TAG, decode_base64_query
from .errors import (
    CommandError,
    DeviceIdError,
    DeviceTypeError,
    MethodError,
    QueryError,
    UserError,
    VersionError,
)
from .identity import Identity, resolve_identity
from .versions import PROTOCOL_VERSIONS, at_least, version_tuple

__all__ = [
    "THROWAWAY_DEVICE_IDS",
    "Command",
    "EasRequest",
    "Identity",
    "QueryForm",
    "parse_request",
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

    @property
    def code(self) -> int | None:
        """The base64-form command code (MS-ASHTTP 2.2.1.1.1.1.2), or None."""
        return _CODE_BY_COMMAND.get(self)


@dataclass(frozen=True, slots=True)
class EasRequest:
    """One parsed EAS request: everything access control needs, nothing I/O."""

    method: str  # "POST" or "OPTIONS"
    command: Command | None  # None only for OPTIONS
    user: Identity | None  # None: OPTIONS without credentials/query, or Bearer without User
    device_id: str  # canonical, upper-cased (§6.2); "" for an OPTIONS without one
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
    is_throwaway_device: bool = False  # DeviceId "validate" etc. (THROWAWAY_DEVICE_IDS)

    @property
    def version_tuple(self) -> tuple[int, int] | None:
        """The protocol version as ``(major, minor)``, or None when unknown."""
        return version_tuple(self.protocol_version)

    def at_least(self, major: int, minor: int) -> bool:
        """Whether the client speaks ``major.minor`` or newer (unknown: False)."""
        return at_least(self.protocol_version, major, minor)


# --- Tables (MS-ASHTTP 2.2.1.1.1.1.2, 2.2.1.1.1.1.3; eas-protocol.md §1.3) ---

_COMMAND_BY_CODE: Mapping[int, Command] = {
    0: Command.Sync,
    1: Command.SendMail,
    2: Command.SmartForward,
    3: Command.SmartReply,
    4: Command.GetAttachment,
    9: Command.FolderSync,
    10: Command.FolderCreate,
    11: Command.FolderDelete,
    12: Command.FolderUpdate,
    13: Command.MoveItems,
    14: Command.GetItemEstimate,
    15: Command.MeetingResponse,
    16: Command.Search,
    17: Command.Settings,
    18: Command.Ping,
    19: Command.ItemOperations,
    20: Command.Provision,
    21: Command.ResolveRecipients,
    22: Command.ValidateCert,
    23: Command.Find,
}
_CODE_BY_COMMAND: Mapping[Command, int] = {c: n for n, c in _COMMAND_BY_CODE.items()}
_COMMAND_BY_NAME: Mapping[str, Command] = {c.value.lower(): c for c in Command}


# Plain parameter names, matched case-insensitively and stored in this spelling.
_PLAIN_NAMES: Mapping[str, str] = {
    n.lower(): n
    for n in ("Cmd", "DeviceId", "DeviceType", *PARAM_BY_TAG.values(), *OPTION_BITS.values())
}
_SINGLE_VALUED = frozenset({"Cmd", "DeviceId", "DeviceType", "User"})
_PLAIN_MARKER = re.compile(r"(?:^|&)(?:cmd|deviceid|devicetype|user)=", re.IGNORECASE)
_PLAIN_DEVICE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}", re.ASCII)
_POLICY_KEY = re.compile(r"[0-9]{1,10}", re.ASCII)
MAX_DEVICE_TYPE = 64


@dataclass(slots=True)
class _Query:
    """What either query form carried, before headers and identity are added."""

    form: QueryForm
    command: Command | None = None
    device_id: str = ""
    device_id_raw: str = ""
    device_type: str = ""
    version: str | None = None
    policy_key: int | None = None
    locale: int | None = None
    user: str | None = None
    params: dict[str, str] = field(default_factory=dict)


# --- The entry point ---


def parse_request(
    method: str, query: str, headers: Mapping[str, str], realms: Realms = NO_REALMS
) -> EasRequest:
    """Parse one EAS request line into an ``EasRequest``.

    ``query`` is the raw query string (without or with the leading ``?``);
    ``headers`` any mapping, looked up case-insensitively; ``realms`` the
    configured realms the user is canonicalised under. Raises a
    ``RequestError`` subclass for anything malformed.
    """
    verb = _parse_method(method)
    hdrs = _single_headers(headers)
    options = verb == "OPTIONS"
    q = _parse_query(query.removeprefix("?"), options)
    if q.form is not QueryForm.BASE64:
        q.version = _header_version(hdrs.get("ms-asprotocolversion"))
    if q.policy_key is None:
        q.policy_key = _header_policy_key(hdrs.get("x-ms-policykey"))
    if "AcceptMultiPart" not in q.params and "ms-asacceptmultipart" in hdrs:
        q.params["AcceptMultiPart"] = hdrs["ms-asacceptmultipart"].strip()
    user = resolve_identity(hdrs.get("authorization"), q.user, realms)
    if user is None and not options and "authorization" not in hdrs:
        raise UserError("no user: neither Authorization nor a query User names one")
    return _build(verb, q, user, hdrs)


_SINGLE_HEADERS = frozenset(
    {"ms-asprotocolversion", "x-ms-policykey", "user-agent", "ms-asacceptmultipart"}
)
"""Headers the decision reads (device access rules match the protocol version and
the User-Agent; the policy gate reads the key): sent twice, the gateway would
decide on one copy while the backend may act on the other, so a repeat is 400."""


def _single_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Lower-cased name -> value; a repeated ``_SINGLE_HEADERS`` name raises."""
    hdrs: dict[str, str] = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in _SINGLE_HEADERS and lowered in hdrs:
            raise QueryError(f"header {name} appears more than once")
        hdrs[lowered] = value
    return hdrs


# Every request builds one: its fields are checked as they are parsed, so the
# slots are filled directly (``sentry.slots``), not through the frozen ``__init__``.
_new_request = fast_constructor(EasRequest, keywords=True)


def _build(verb: str, q: _Query, user: Identity | None, hdrs: Mapping[str, str]) -> EasRequest:
    return _new_request(
        method=verb,
        command=q.command,
        user=user,
        device_id=q.device_id,
        device_id_raw=q.device_id_raw,
        device_type=q.device_type,
        protocol_version=q.version,
        policy_key=q.policy_key,
        locale=q.locale,
        params=MappingProxyType(q.params),
        query_form=q.form,
        query_user=q.user,
        user_agent=_header_text(hdrs.get("user-agent")),
        content_type=_header_text(hdrs.get("content-type")),
        is_throwaway_device=q.device_id in THROWAWAY_DEVICE_IDS,
    )


def _parse_method(method: str) -> str:
    verb = method.upper()
    if verb not in ("POST", "OPTIONS"):
        raise MethodError(f"method {_show(method)} is not allowed: EAS uses POST and OPTIONS")
    return verb


def _parse_query(query: str, options: bool) -> _Query:
    if not query:
        if options:
            return _Query(QueryForm.NONE)
        raise QueryError("empty query string: an EAS POST needs Cmd, User, DeviceId, DeviceType")
    if _PLAIN_MARKER.search(query):
        return _parse_plain(query, options)
    return _parse_base64(query, options)


def _show(value: str, limit: int = 40) -> str:
    """A value for an error message: quoted, escaped and cut to ``limit`` chars."""
    return repr(value[:limit]) + ("..." if len(value) > limit else "")


# --- Plain form (MS-ASHTTP 2.2.1.1.1.2) ---


def _parse_plain(query: str, options: bool) -> _Query:
    fields = _plain_fields(query)
    cmd = fields.pop("Cmd", None)
    q = _Query(QueryForm.PLAIN, command=None if options else _plain_command(cmd))
    q.device_id_raw = fields.pop("DeviceId", "")
    q.device_id = _plain_device_id(q.device_id_raw, options)
    q.device_type = _check_device_type(fields.pop("DeviceType", ""), options)
    q.user = fields.pop("User", "") or None
    q.params = fields
    return q


def _pairs(query: str) -> list[tuple[str, str]]:
    """``parse_qsl(query, keep_blank_values=True)``; a query without escapes
    (no ``%``, no ``+``: every EAS client's plain query) split here at once."""
    if "%" in query or "+" in query:
        return parse_qsl(query, keep_blank_values=True)
    return [(name, value) for name, _, value in (f.partition("=") for f in query.split("&") if f)]


def _plain_fields(query: str) -> dict[str, str]:
    """Name -> value; known names in canonical spelling, single-valued ones once."""
    fields: dict[str, str] = {}
    for name, value in _pairs(query):
        canonical = _PLAIN_NAMES.get(name.lower(), name)
        if canonical in _SINGLE_VALUED and canonical in fields:
            raise QueryError(f"query parameter {canonical} appears more than once")
        fields[canonical] = value
    return fields


def _plain_command(name: str | None) -> Command:
    if not name:
        raise CommandError("query has no Cmd parameter" if name is None else "Cmd is empty")
    command = _COMMAND_BY_NAME.get(name.lower())
    if command is None:
        raise CommandError(f"unknown command Cmd={_show(name)}")
    return command


def _plain_device_id(raw: str, options: bool) -> str:
    """Validate a plain DeviceId; return it upper-cased (the canonical form)."""
    if not raw:
        if options:
            return ""
        raise DeviceIdError("DeviceId is missing or empty")
    if not _PLAIN_DEVICE_ID.fullmatch(raw):
        raise DeviceIdError(f"DeviceId {_show(raw)} is not 1-64 letters, digits, '-' or '_'")
    return raw.upper()


def _check_device_type(value: str, options: bool) -> str:
    if not value:
        if options:
            return ""
        raise DeviceTypeError("DeviceType is missing or empty")
    if len(value) > MAX_DEVICE_TYPE:
        raise DeviceTypeError(f"DeviceType is {len(value)} chars, over {MAX_DEVICE_TYPE}")
    if not (value.isascii() and value.isprintable()):
        raise DeviceTypeError(f"DeviceType {_show(value)} is not printable ASCII")
    return value


# --- Base64 form (MS-ASHTTP 2.2.1.1.1.1; eas-protocol.md §1.3.1) ---


def _parse_base64(query: str, options: bool) -> _Query:
    blob = decode_base64_query(query)
    q = _Query(QueryForm.BASE64, version=blob.version, policy_key=blob.policy_key)
    q.command = None if options else _blob_command(blob.command_code)
    q.locale = blob.locale
    q.device_id, q.device_id_raw = _blob_device_id(blob.device_id, options)
    q.device_type = _check_device_type(_blob_ascii(blob.device_type), options)
    q.user = blob.user
    q.params = dict(blob.params)
    return q


def _blob_command(code: int) -> Command:
    command = _COMMAND_BY_CODE.get(code)
    if command is None:
        raise CommandError(f"base64 query: command code {code} is not assigned")
    return command


def _blob_device_id(raw: bytes, options: bool) -> tuple[str, str]:
    """(canonical, raw): ASCII alphanumerics as text, anything else as hex (§6.2)."""
    if not raw:
        if options:
            return "", ""
        raise DeviceIdError("base64 query: DeviceId length is 0")
    if raw.isascii() and raw.isalnum():
        text = raw.decode("ascii")
        return text.upper(), text
    return raw.hex().upper(), raw.hex()


def _blob_ascii(raw: bytes) -> str:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise DeviceTypeError("base64 query: DeviceType is not ASCII") from None


# --- Headers (MS-ASHTTP 2.2.1.1.2) ---


def _header_text(value: str | None) -> str | None:
    """A header value as text that can be stored and logged.

    HTTP servers (aiohttp among them) hand non-UTF-8 header bytes over as lone
    surrogates (``surrogateescape``); such a string cannot be encoded again,
    so a device could make every write of its row fail. Each undecodable byte
    becomes U+FFFD instead."""
    if value is None or value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return value


def _header_version(value: str | None) -> str | None:
    if value is None:
        return None
    version = value.strip()
    if version not in PROTOCOL_VERSIONS:
        allowed = ",".join(PROTOCOL_VERSIONS)
        raise VersionError(f"MS-ASProtocolVersion {_show(version)} is not one of {allowed}")
    return version


def _header_policy_key(value: str | None) -> int | None:
    """``X-MS-PolicyKey``: a decimal uint32; blank counts as not sent."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if not _POLICY_KEY.fullmatch(text) or int(text) > 0xFFFFFFFF:
        raise QueryError(f"X-MS-PolicyKey {_show(text)} is not a decimal 32-bit unsigned integer")
    return int(text)
