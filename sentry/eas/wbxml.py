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


class _Open:
    """An element being decoded: its name and the content gathered so far."""

    __slots__ = ("content", "namespace", "tag")

    def __init__(self, namespace: str, tag: str) -> None:
        self.namespace = namespace
        self.tag = tag
        self.content: list[Content] = []


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


def _tag_name(page: int, token: int, limits: Limits, pos: int) -> tuple[str, str]:
    cp = PAGES[page]
    known = cp.by_value.get(token)
    if known is not None:
        return cp.namespace, known.name
    if not limits.allow_unknown:
        raise WbxmlError(f"unknown token 0x{token:02X} on code page {page}", pos)
    return cp.namespace, f"{UNKNOWN_PREFIX}{token:02X}"


def decode(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Element:
    """Decode a WBXML document into its root ``Element``.

    Raises ``WbxmlError`` for anything malformed or over ``limits``.
    """
    if len(data) > limits.max_size:
        raise WbxmlError(f"body of {len(data)} bytes exceeds the limit of {limits.max_size}")
    data = bytes(data)
    pos = _read_header(data)
    end = len(data)
    page = 0
    stack: list[_Open] = []
    root: Element | None = None
    elements = 0
    while pos < end:
        b = data[pos]
        if b == SWITCH_PAGE:
            if pos + 1 >= end:
                raise WbxmlError("truncated SWITCH_PAGE", pos)
            page = data[pos + 1]
            if page >= len(PAGES):
                raise WbxmlError(f"unknown code page {page}", pos)
            pos += 2
        elif b == END:
            if not stack:
                raise WbxmlError("END without an open element", pos)
            done = stack.pop()
            element = Element(done.namespace, done.tag, tuple(done.content))
            if stack:
                stack[-1].content.append(element)
            else:
                root = element
            pos += 1
        elif b == STR_I:
            stop = data.find(0, pos + 1, min(end, pos + 2 + limits.max_string))
            if stop < 0:
                if end - pos - 1 > limits.max_string:
                    raise WbxmlError(f"inline string longer than {limits.max_string} bytes", pos)
                raise WbxmlError("unterminated inline string", pos)
            if not stack:
                raise WbxmlError("inline string outside any element", pos)
            try:
                stack[-1].content.append(data[pos + 1 : stop].decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise WbxmlError(f"inline string is not UTF-8: {exc.reason}", pos) from None
            pos = stop + 1
        elif b == OPAQUE:
            length, start = _read_mb_uint(data, pos + 1)
            if length > limits.max_opaque:
                raise WbxmlError(f"opaque data of {length} bytes exceeds the limit", pos)
            if start + length > end:
                raise WbxmlError(f"opaque data claims {length} bytes, {end - start} present", pos)
            if not stack:
                raise WbxmlError("opaque data outside any element", pos)
            stack[-1].content.append(data[start : start + length])
            pos = start + length
        elif b in _UNUSED_GLOBALS:
            raise WbxmlError(f"global token {_UNUSED_GLOBALS[b]} is not used in EAS", pos)
        elif b & ATTR_BIT:
            raise WbxmlError(f"tag 0x{b:02X} has attributes, which EAS never uses", pos)
        else:
            if root is not None:
                raise WbxmlError("data after the root element", pos)
            elements += 1
            if elements > limits.max_elements:
                raise WbxmlError(f"more than {limits.max_elements} elements", pos)
            namespace, tag = _tag_name(page, b & 0x3F, limits, pos)
            if b & CONTENT_BIT:
                if len(stack) >= limits.max_depth:
                    raise WbxmlError(f"elements nested deeper than {limits.max_depth}", pos)
                stack.append(_Open(namespace, tag))
            elif stack:
                stack[-1].content.append(Element(namespace, tag))
            else:
                root = Element(namespace, tag)
            pos += 1
    if stack:
        raise WbxmlError(f"body ends inside <{stack[-1].tag}>", end)
    if root is None:
        raise WbxmlError("body has no root element", end)
    return root


def _token_of(element: Element) -> tuple[int, int]:
    """The (page, token) that encodes ``element``; WbxmlError when unknown."""
    page = PAGE_BY_NAMESPACE.get(element.namespace)
    if page is None:
        raise WbxmlError(f"unknown namespace {element.namespace!r}")
    token = page.by_name.get(element.tag)
    if token is not None:
        return page.number, token.value
    if element.tag.startswith(UNKNOWN_PREFIX):
        try:
            value = int(element.tag[len(UNKNOWN_PREFIX) :], 16)
        except ValueError:
            value = -1
        if 0x05 <= value <= 0x3F and value not in page.by_value:
            return page.number, value
    raise WbxmlError(f"unknown tag {element.namespace}:{element.tag}")


def encode(root: Element) -> bytes:
    """Encode an ``Element`` tree as a WBXML document (canonical EAS form).

    Raises ``WbxmlError`` for an unknown namespace or tag, or a string that
    contains NUL (STR_I cannot carry it).
    """
    out = bytearray(HEADER)
    page = 0
    # An explicit stack of iterators keeps deep trees off the interpreter stack.
    stack: list[Iterator[Content]] = [iter((root,))]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            if stack:
                out.append(END)
            continue
        if isinstance(item, Element):
            item_page, token = _token_of(item)
            if item_page != page:
                out += bytes((SWITCH_PAGE, item_page))
                page = item_page
            if item.content:
                out.append(token | CONTENT_BIT)
                stack.append(iter(item.content))
            else:
                out.append(token)
        elif isinstance(item, str):
            try:
                raw = item.encode("utf-8")
            except UnicodeEncodeError:
                raise WbxmlError("inline string contains a lone surrogate") from None
            if 0 in raw:
                raise WbxmlError("inline string contains NUL")
            out.append(STR_I)
            out += raw
            out.append(0)
        else:
            out.append(OPAQUE)
            out += _write_mb_uint(len(item))
            out += item
    return bytes(out)
