"""MS-ASWBXML code pages 0-25 as data.

Each page is a namespace (the spec names of EAS 16.1) with its tag tokens
(0x05-0x3F). Tokens carry the protocol version that introduced them where known,
and tokens that the current spec no longer lists but older clients still send
are kept with ``legacy=True``: the decoder accepts them, the encoder writes them
only when asked for them by name.

Sources (facts, not code): MS-ASWBXML 2.1.2.1.1-2.1.2.1.26; the Microsoft
protocol test suite's token tables; Z-Push/grommunio-sync ``wbxmldefs.php``
"since" notes and legacy tokens; see ``docs`` in the project's shared folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["PAGES", "PAGE_BY_NAMESPACE", "CodePage", "Token", "lookup"]


@dataclass(frozen=True, slots=True)
class Token:
    """One tag of a code page: its 6-bit value and spec name."""

    value: int
    name: str
    since: str | None = None  # protocol version that introduced it, e.g. "16.0"
    legacy: bool = False  # absent from the current spec; tolerated when decoding


@dataclass(frozen=True)
class CodePage:
    """A WBXML code page: number, namespace and its tokens."""

    number: int
    namespace: str
    since: str | None
    tokens: tuple[Token, ...]
    by_value: Mapping[int, Token] = field(init=False, repr=False, compare=False)
    by_name: Mapping[str, Token] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_value", {t.value: t for t in self.tokens})
        object.__setattr__(self, "by_name", {t.name: t for t in self.tokens})


def _page(number: int, namespace: str, since: str | None, *tokens: Token) -> CodePage:
    return CodePage(number, namespace, since, tokens)


T = Token

PAGES: tuple[CodePage, ...] = (
    _page(
        0,
        "AirSync",
        "2.5",
        T(0x05, "Sync"),
        T(0x06, "Responses"),
        T(0x07, "Add"),
        T(0x08, "Change"),
        T(0x09, "Delete"),
        T(0x0A, "Fetch"),
        T(0x0B, "SyncKey"),
        T(0x0C, "ClientId"),
        T(0x0D, "ServerId"),
        T(0x0E, "Status"),
        T(0x0F, "Collection"),
        T(0x10, "Class"),
        T(0x11, "Version", legacy=True),
        T(0x12, "CollectionId"),
        T(0x13, "GetChanges"),
        T(0x14, "MoreAvailable"),
        T(0x15, "WindowSize"),
        T(0x16, "Commands"),
        T(0x17, "Options"),
        T(0x18, "FilterType"),
        T(0x19, "Truncation", legacy=True),
        T(0x1A, "RtfTruncation", legacy=True),
        T(0x1B, "Conflict"),
        T(0x1C, "Collections"),
        T(0x1D, "ApplicationData"),
        T(0x1E, "DeletesAsMoves"),
        T(0x1F, "NotifyGUID", legacy=True),
        T(0x20, "Supported"),
        T(0x21, "SoftDelete"),
        T(0x22, "MIMESupport"),
        T(0x23, "MIMETruncation"),
        T(0x24, "Wait", "12.0"),
        T(0x25, "Limit", "12.0"),
        T(0x26, "Partial", "12.0"),
        T(0x27, "ConversationMode", "14.0"),
        T(0x28, "MaxItems", "14.0"),
        T(0x29, "HeartbeatInterval", "14.0"),
    ),
    # Pages 1-25 follow (filled from the spec tables).
)

PAGE_BY_NAMESPACE: Mapping[str, CodePage] = {p.namespace: p for p in PAGES}


def lookup(namespace: str, name: str) -> tuple[CodePage, Token] | None:
    """The page and token for ``namespace:name``, or None when unknown."""
    page = PAGE_BY_NAMESPACE.get(namespace)
    if page is None:
        return None
    token = page.by_name.get(name)
    return None if token is None else (page, token)
