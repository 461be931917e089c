"""The byte layout of the base64-encoded query (MS-ASHTTP 2.2.1.1.1.1).

Approach. ``decode_base64_query`` turns the query text into bytes (tolerating
percent-escapes, the URL-safe alphabet and missing padding) and reads the
§1.3.1 layout with ``_Blob``, a cursor whose every read is bounds-checked, so a
truncated blob or a length byte that overruns raises ``QueryError`` naming the
field and the byte offset. Only the layout lives here; what the fields mean
(command names, DeviceId canonical form, DeviceType rules) is ``request.py``'s.

    offset 0      version byte (121, 140, 141, 160, 161)
           1      command code
           2..3   locale, uint16 little-endian
           4      DeviceId length (> 0), DeviceId bytes
                  policy key length (0 or 4), uint32 little-endian
                  DeviceType length, DeviceType ASCII
                  then ``tag len value`` parameters until the end
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote

from .errors import QueryError, VersionError
from .versions import BASE64_VERSION_BYTES

__all__ = ["Base64Query", "decode_base64_query", "with_command", "with_policy_key"]

PARAM_BY_TAG: Mapping[int, str] = {
    0: "AttachmentName",
    1: "CollectionId",
    2: "CollectionName",  # deprecated
    3: "ItemId",
    4: "LongId",
    5: "ParentId",  # deprecated
    6: "Occurrence",
    7: "Options",
    8: "User",
}
OPTION_BITS: Mapping[int, str] = {0x01: "SaveInSent", 0x02: "AcceptMultiPart"}
_BASE64_TEXT = re.compile(r"[A-Za-z0-9+/]+", re.ASCII)
_URLSAFE_TO_STANDARD = str.maketrans("-_ ", "+/+")  # a space is a "+" gone astray


@dataclass(frozen=True, slots=True)
class Base64Query:
    """The fields of a base64 query, as bytes where their meaning is not ours."""

    version: str
    command_code: int
    locale: int
    device_id: bytes
    policy_key: int | None
    device_type: bytes
    user: str | None
    params: Mapping[str, str]


class _Blob:
    """A cursor over the decoded bytes; every read is bounds-checked."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def byte(self, what: str) -> int:
        if self.remaining < 1:
            raise QueryError(
                f"base64 query truncated: {what} missing at byte {self.pos} "
                f"of a {len(self.data)}-byte blob"
            )
        self.pos += 1
        return self.data[self.pos - 1]

    def take(self, n: int, what: str) -> bytes:
        if n > self.remaining:
            raise QueryError(
                f"base64 query: {what} claims {n} bytes at byte {self.pos}, "
                f"only {self.remaining} present"
            )
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def field(self, what: str) -> bytes:
        """A length byte, then that many bytes."""
        return self.take(self.byte(f"{what} length"), what)


def decode_base64_query(query: str) -> Base64Query:
    """Decode and read a base64 query; ``QueryError``/``VersionError`` when malformed."""
    blob = _Blob(_b64decode(query))
    version = _version(blob.byte("protocol version"))
    command_code = blob.byte("command code")
    locale = int.from_bytes(blob.take(2, "locale"), "little")
    device_id = blob.field("DeviceId")
    policy_key = _policy_key(blob.field("policy key"))
    device_type = blob.field("DeviceType")
    params: dict[str, str] = {}
    user = _read_params(blob, params)
    return Base64Query(
        version, command_code, locale, device_id, policy_key, device_type, user, params
    )


def _b64decode(query: str) -> bytes:
    text = unquote(query).strip().translate(_URLSAFE_TO_STANDARD).rstrip("=")
    if not _BASE64_TEXT.fullmatch(text) or len(text) % 4 == 1:
        shown = repr(query[:40]) + ("..." if len(query) > 40 else "")
        raise QueryError(f"query {shown} is neither plain (no Cmd=) nor base64")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):  # pragma: no cover - excluded by the checks above
        raise QueryError("query is not valid base64") from None


def _version(byte: int) -> str:
    version = BASE64_VERSION_BYTES.get(byte)
    if version is None:
        allowed = ", ".join(str(b) for b in BASE64_VERSION_BYTES)
        raise VersionError(f"base64 query: version byte {byte} is not one of {allowed}")
    return version


def _policy_key(raw: bytes) -> int | None:
    if len(raw) not in (0, 4):
        raise QueryError(f"base64 query: policy key length is {len(raw)}, must be 0 or 4")
    return int.from_bytes(raw, "little") if raw else None


def _read_params(blob: _Blob, params: dict[str, str]) -> str | None:
    """Read ``tag len value`` triples into ``params``; return the User, if any."""
    user: str | None = None
    seen: set[int] = set()
    while blob.remaining:
        at = blob.pos
        tag = blob.byte("parameter tag")
        name = PARAM_BY_TAG.get(tag)
        if name is None:
            raise QueryError(f"base64 query: unknown parameter tag {tag} at byte {at}")
        if tag in seen:
            raise QueryError(f"base64 query: parameter {name} appears more than once")
        seen.add(tag)
        value = blob.field(name)
        if name == "Options":
            params.update(_options(value))
        elif name == "User":
            user = _text(value, name) or None
        else:
            params[name] = _text(value, name)
    return user


def _options(value: bytes) -> dict[str, str]:
    """The Options bit mask as the plain-form parameters it stands for."""
    if len(value) != 1:
        raise QueryError(f"base64 query: Options is {len(value)} bytes, must be 1")
    return {name: "T" for bit, name in OPTION_BITS.items() if value[0] & bit}


def _text(value: bytes, name: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise QueryError(f"base64 query: parameter {name} is not UTF-8") from None


def with_policy_key(query: str, key: int | None) -> str:
    """``query`` (a base64 query) with its policy key replaced by ``key``
    (None: no key, length 0); everything else byte for byte as it was.
    ``QueryError`` when the query is malformed (it was parsed before, so only
    for a caller's mistake)."""
    raw = _b64decode(query)
    blob = _Blob(raw)
    blob.take(4, "header")
    blob.field("DeviceId")
    start = blob.pos
    old = blob.field("policy key")
    end = start + 1 + len(old)
    field = b"\x00" if key is None else b"\x04" + key.to_bytes(4, "little")
    return base64.b64encode(raw[:start] + field + raw[end:]).decode("ascii")


def with_command(query: str, code: int) -> str:
    """``query`` (a base64 query) for command ``code`` (MS-ASHTTP 2.2.1.1.1.1.2);
    everything else byte for byte as it was."""
    raw = bytearray(_b64decode(query))
    if len(raw) < 2:
        raise QueryError("base64 query truncated: no command code")
    raw[1] = code
    return base64.b64encode(bytes(raw)).decode("ascii")
