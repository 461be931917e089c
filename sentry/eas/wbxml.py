"""WBXML 1.3 as EAS uses it (MS-ASWBXML): ``decode(data, limits) -> Element`` and
``encode(Element) -> bytes``.

Approach. The decoder is one iterative loop over the bytes with an explicit stack
of open elements, so a hostile body cannot recurse the interpreter; every read is
bounds-checked and every count is checked against ``Limits`` before memory is
spent, so a hostile body cannot exhaust memory or CPU either (the work is linear
in the input). Any malformed input raises ``WbxmlError`` (HTTP 400 / EAS 102),
never ``IndexError``, ``UnicodeDecodeError`` or ``RecursionError``.

Rules that matter (eas-protocol.md §2):

* The header is version, public id, charset (106 = UTF-8) and string-table
  length; EAS never uses the string table, so STR_T is rejected and a table,
  if present, is skipped.
* The code page is global state: it changes only on SWITCH_PAGE and END does
  not restore it. The encoder emits SWITCH_PAGE only when the page changes,
  starting from page 0, which is the canonical form of every test vector.
* A tag byte is ``token | 0x40`` when the element has content (closed by END);
  without 0x40 the element is empty. The attribute bit 0x80 is never used in
  EAS and is rejected, as are the other unused global tokens.
* Content is inline strings (STR_I, NUL-terminated UTF-8), OPAQUE bytes
  (``mb_u_int32`` length) and child elements, in any order.
* Tokens that no code page defines are kept (tag ``Unknown_XX``) rather than
  failing, so the gateway never refuses a client for a token we have not
  heard of; ``Limits(allow_unknown=False)`` makes them an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Union

from .codepages import PAGE_BY_NAMESPACE, PAGES
from .errors import WbxmlError

__all__ = ["DEFAULT_LIMITS", "Content", "Element", "Limits", "decode", "encode"]

SWITCH_PAGE = 0x00
END = 0x01
STR_I = 0x03
OPAQUE = 0xC3
CONTENT_BIT = 0x40
ATTR_BIT = 0x80
HEADER = b"\x03\x01\x6a\x00"  # WBXML 1.3, unknown public id, UTF-8, no string table
UTF8_MIBENUM = 106
UNKNOWN_PREFIX = "Unknown_"
_UNUSED_GLOBALS = {
    0x02: "ENTITY",
    0x04: "LITERAL",
    0x40: "EXT_I_0",
    0x41: "EXT_I_1",
    0x42: "EXT_I_2",
    0x43: "PI",
    0x44: "LITERAL_C",
    0x80: "EXT_T_0",
    0x81: "EXT_T_1",
    0x82: "EXT_T_2",
    0x83: "STR_T",
    0x84: "LITERAL_A",
    0xC0: "EXT_0",
    0xC1: "EXT_1",
    0xC2: "EXT_2",
    0xC4: "LITERAL_AC",
}


@dataclass(frozen=True, slots=True)
class Element:
    """One WBXML element: namespace (code page name), tag, and its content.

    ``content`` holds, in document order, child elements, inline strings and
    opaque byte strings. An element with empty ``content`` is encoded as an
    empty tag (no content bit).
    """

    namespace: str
    tag: str
    content: tuple[Content, ...] = ()

    @property
    def children(self) -> tuple[Element, ...]:
        """The child elements, without text or opaque content."""
        return tuple(c for c in self.content if isinstance(c, Element))

    @property
    def text(self) -> str | None:
        """The inline string content joined, or None when there is none.

        OPAQUE content counts as text when it is valid UTF-8 (EAS servers send
        some string fields as OPAQUE).
        """
        parts = [c for c in self.content if isinstance(c, str)]
        if parts:
            return "".join(parts)
        raw = self.opaque
        if raw is None:
            return None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return None

    @property
    def opaque(self) -> bytes | None:
        """The OPAQUE content joined, or None when there is none."""
        parts = [c for c in self.content if isinstance(c, bytes)]
        return b"".join(parts) if parts else None

    def find(self, tag: str, namespace: str | None = None) -> Element | None:
        """The first child with this tag (and namespace, when given)."""
        for child in self.iter_children(tag, namespace):
            return child
        return None

    def iter_children(self, tag: str, namespace: str | None = None) -> Iterator[Element]:
        """Children with this tag (and namespace, when given), in order."""
        for c in self.content:
            if (
                isinstance(c, Element)
                and c.tag == tag
                and (namespace is None or c.namespace == namespace)
            ):
                yield c

    def find_path(self, *tags: str) -> Element | None:
        """Follow a path of child tags from this element, e.g.
        ``root.find_path("Policies", "Policy", "PolicyType")``."""
        node: Element | None = self
        for tag in tags:
            if node is None:
                return None
            node = node.find(tag)
        return node

    def child_text(self, tag: str, namespace: str | None = None) -> str | None:
        """The text of the first child with this tag, or None."""
        child = self.find(tag, namespace)
        return None if child is None else child.text


Content = Union[Element, str, bytes]  # noqa: UP007  (a runtime alias, used before 3.12)


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what ``decode`` accepts; every one is checked before the work."""

    max_size: int = 32 * 1024 * 1024  # total input bytes
    max_depth: int = 32  # nesting of elements
    max_elements: int = 200_000  # elements in the document
    max_string: int = 32 * 1024 * 1024  # bytes of one STR_I
    max_opaque: int = 32 * 1024 * 1024  # bytes of one OPAQUE
    allow_unknown: bool = True  # tokens no code page defines -> Unknown_XX


DEFAULT_LIMITS = Limits()


def _read_mb_uint(data: bytes, pos: int) -> tuple[int, int]:
    """Read a WBXML ``mb_u_int32`` at ``pos``; return (value, next position)."""
    value = 0
    for i in range(5):
        if pos + i >= len(data):
            raise WbxmlError("truncated multi-byte integer", pos)
        b = data[pos + i]
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            if value > 0xFFFFFFFF:
                raise WbxmlError("multi-byte integer exceeds 32 bits", pos)
            return value, pos + i + 1
    raise WbxmlError("multi-byte integer longer than 5 bytes", pos)


def _write_mb_uint(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(reversed(out))


def _read_header(data: bytes) -> int:
    """Validate the WBXML header; return the offset of the body."""
    if len(data) < 4:
        raise WbxmlError("body shorter than the 4-byte WBXML header", 0)
    if data[0] not in (0x01, 0x02, 0x03):
        raise WbxmlError(f"unsupported WBXML version byte 0x{data[0]:02X}", 0)
    public_id, pos = _read_mb_uint(data, 1)
    if public_id == 0:  # public id given as a string-table index
        _, pos = _read_mb_uint(data, pos)
    charset, pos = _read_mb_uint(data, pos)
    if charset != UTF8_MIBENUM:
        raise WbxmlError(f"charset {charset} is not UTF-8 (106)", pos)
    table_len, pos = _read_mb_uint(data, pos)
    if table_len > len(data) - pos:
        raise WbxmlError("string table runs past the end of the body", pos)
    return pos + table_len


