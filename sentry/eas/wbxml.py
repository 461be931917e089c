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
* A document is exactly one root element: nothing, not even a SWITCH_PAGE,
  may follow its END. Every limit counts the same way for empty and
  non-empty elements (an empty tag is as deep as any other).
* Tokens that no code page defines are kept (tag ``Unknown_XX``) rather than
  failing, so the gateway never refuses a client for a token we have not
  heard of; ``Limits(allow_unknown=False)`` makes them an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Union

from .codepages import PAGES
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
        for c in self.content:  # iter_children's test, without a generator per call
            if (
                isinstance(c, Element)
                and c.tag == tag
                and (namespace is None or c.namespace == namespace)
            ):
                return c
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
    """Bounds on what ``decode`` accepts; every one is checked before the work.

    A body at a bound is accepted and one past it refused; ``max_depth`` counts
    the root as depth 1 and counts empty elements like any other.
    """

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
    if data.startswith(HEADER):  # what every EAS peer sends
        return 4
    if len(data) < 4:
        raise WbxmlError("body shorter than the 4-byte WBXML header", 0)
    if data[0] not in (0x01, 0x02, 0x03):
        raise WbxmlError(f"unsupported WBXML version byte 0x{data[0]:02X}", 0)
    public_id, pos = _read_mb_uint(data, 1)
    if public_id == 0:  # public id given as a string-table index
        _, pos = _read_mb_uint(data, pos)
    charset, after = _read_mb_uint(data, pos)
    if charset != UTF8_MIBENUM:
        raise WbxmlError(f"charset {charset} is not UTF-8 (106)", pos)
    pos = after
    table_len, pos = _read_mb_uint(data, pos)
    if table_len > len(data) - pos:
        raise WbxmlError("string table runs past the end of the body", pos)
    return pos + table_len


def _build_tables() -> tuple[tuple[str, ...], tuple[tuple[str | None, ...], ...]]:
    """Per page: its namespace, and the tag name of each 6-bit token (None: unknown)."""
    namespaces = tuple(p.namespace for p in PAGES)
    names = tuple(
        tuple(p.by_value[t].name if t in p.by_value else None for t in range(64)) for p in PAGES
    )
    return namespaces, names


# Decoder tables, indexed by page number, so the loop does two tuple indexings per tag.
_NAMESPACES, _NAMES = _build_tables()
# Encoder table: namespace -> (page number, tag name -> token).
_TOKENS: dict[str, tuple[int, dict[str, int]]] = {
    p.namespace: (p.number, {t.name: t.value for t in p.tokens}) for p in PAGES
}


# The loop builds closed elements with ``object.__new__`` and the setters of the
# slot descriptors instead of the frozen dataclass ``__init__``, whose per-field
# ``object.__setattr__`` calls cost a fifth of a small decode. Same object, faster;
# the round-trip tests compare such elements with ones built normally.
_SETTERS = tuple(Element.__dict__[f].__set__ for f in ("namespace", "tag", "content"))


def _unknown_tag(page: int, token: int, limits: Limits, pos: int) -> str:
    """The name kept for a token no code page defines (or the error, if refused)."""
    if not limits.allow_unknown:
        raise WbxmlError(f"unknown token 0x{token:02X} on code page {page}", pos)
    return f"{UNKNOWN_PREFIX}{token:02X}"


def _bad_byte(b: int, pos: int) -> WbxmlError:
    """The error for a byte that is neither a tag nor a global token EAS uses."""
    name = _UNUSED_GLOBALS.get(b)
    if name is not None:
        return WbxmlError(f"global token {name} is not used in EAS", pos)
    return WbxmlError(f"tag 0x{b:02X} has attributes, which EAS never uses", pos)


def _string_error(data: bytes, pos: int, limits: Limits) -> WbxmlError:
    """The error for an STR_I at ``pos`` whose NUL was not found within the limit."""
    if len(data) - pos - 1 > limits.max_string:
        return WbxmlError(f"inline string longer than {limits.max_string} bytes", pos)
    return WbxmlError("unterminated inline string", pos)


def _read_opaque(data: bytes, pos: int, limits: Limits) -> tuple[bytes, int]:
    """Read the OPAQUE token at ``pos``; return (its bytes, next position)."""
    length, start = _read_mb_uint(data, pos + 1)
    if length > limits.max_opaque:
        raise WbxmlError(f"opaque data of {length} bytes exceeds the limit", pos)
    if length > len(data) - start:
        raise WbxmlError(f"opaque data claims {length} bytes, {len(data) - start} present", pos)
    return data[start : start + length], start + length


def decode(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Element:
    """Decode a WBXML document into its root ``Element``.

    Raises ``WbxmlError`` for anything malformed or over ``limits``.
    """
    if len(data) > limits.max_size:
        raise WbxmlError(f"body of {len(data)} bytes exceeds the limit of {limits.max_size}")
    data = bytes(data)
    return _decode_body(data, _read_header(data), limits)


def _decode_body(data: bytes, pos: int, limits: Limits) -> Element:
    """The token loop, from the first body byte to the END of the root.

    This is the hot path, so it is one function that binds what it needs to
    locals and tests tokens in order of frequency (tags, STR_I, END); the rare
    and error paths are the helpers above. ``content`` is the content list of
    the innermost open element; ``stack`` holds, per open element, its name
    and its parent's content list. Once the root is closed the loop stops, and
    any byte left over is an error.
    """
    end = len(data)
    find = data.find
    max_depth, max_elements, max_string = limits.max_depth, limits.max_elements, limits.max_string
    page = 0
    namespace, names = _NAMESPACES[0], _NAMES[0]
    top: list[Content] = []
    content = top
    stack: list[tuple[str, str, list[Content]]] = []
    elements = 0
    new, (set_ns, set_tag, set_content) = object.__new__, _SETTERS
    while pos < end:
        b = data[pos]
        if b < 0x80 and b & 0x3F > 0x04:  # a tag: 0x05-0x3F empty, 0x45-0x7F with content
            elements += 1
            if elements > max_elements:
                raise WbxmlError(f"more than {max_elements} elements", pos)
            if len(stack) >= max_depth:
                raise WbxmlError(f"elements nested deeper than {max_depth}", pos)
            tag = names[b & 0x3F] or _unknown_tag(page, b & 0x3F, limits, pos)
            pos += 1
            if b & CONTENT_BIT:
                # Most EAS elements are a leaf with one string: tag, STR_I, text,
                # NUL, END taken in one step when all of it is there and valid;
                # anything else (or an error) goes the token-by-token way below.
                if pos < end and data[pos] == STR_I:
                    stop = find(0, pos + 1, pos + 2 + max_string)
                    if 0 < stop < end - 1 and data[stop + 1] == END:
                        try:
                            text = data[pos + 1 : stop].decode()
                        except UnicodeDecodeError:
                            pass
                        else:
                            el = new(Element)
                            set_ns(el, namespace)
                            set_tag(el, tag)
                            set_content(el, (text,))
                            content.append(el)
                            pos = stop + 2
                            if not stack:
                                break
                            continue
                stack.append((namespace, tag, content))
                content = []
            else:
                content.append(Element(namespace, tag))
                if not stack:
                    break
        elif b == STR_I:
            stop = find(0, pos + 1, pos + 2 + max_string)
            if stop < 0:
                raise _string_error(data, pos, limits)
            if not stack:
                raise WbxmlError("inline string outside any element", pos)
            try:
                content.append(data[pos + 1 : stop].decode())
            except UnicodeDecodeError as exc:
                raise WbxmlError(f"inline string is not UTF-8: {exc.reason}", pos) from None
            pos = stop + 1
        elif b == END:
            if not stack:
                raise WbxmlError("END without an open element", pos)
            ns, tag, parent = stack.pop()
            el = new(Element)
            set_ns(el, ns)
            set_tag(el, tag)
            set_content(el, tuple(content))
            parent.append(el)
            content = parent
            pos += 1
            if not stack:
                break
        elif b == SWITCH_PAGE:
            if pos + 1 >= end:
                raise WbxmlError("truncated SWITCH_PAGE", pos)
            page = data[pos + 1]
            if page >= len(_NAMES):
                raise WbxmlError(f"unknown code page {page}", pos)
            namespace, names = _NAMESPACES[page], _NAMES[page]
            pos += 2
        elif b == OPAQUE:
            if not stack:
                raise WbxmlError("opaque data outside any element", pos)
            raw, pos = _read_opaque(data, pos, limits)
            content.append(raw)
        else:
            raise _bad_byte(b, pos)
    if stack:
        raise WbxmlError(f"body ends inside <{stack[-1][1]}>", end)
    if not top:
        raise WbxmlError("body has no root element", end)
    if pos < end:
        raise WbxmlError("data after the root element", pos)
    root = top[0]
    assert isinstance(root, Element)  # only tags reach the top level
    return root


def _token_of(element: Element) -> tuple[int, int]:
    """The (page, token) that encodes ``element``; WbxmlError when unknown.

    A tag ``Unknown_XX`` (as ``decode`` names tokens no page defines) encodes
    as token 0xXX, but only in exactly that spelling and only for a free token,
    so that every tag has one encoding and ``decode(encode(t)) == t``.
    """
    entry = _TOKENS.get(element.namespace)
    if entry is None:
        raise WbxmlError(f"unknown namespace {element.namespace!r}")
    number, tokens = entry
    token = tokens.get(element.tag)
    if token is not None:
        return number, token
    suffix = element.tag[len(UNKNOWN_PREFIX) :]
    if element.tag.startswith(UNKNOWN_PREFIX) and len(suffix) == 2:
        value = int(suffix, 16) if all(c in "0123456789ABCDEF" for c in suffix) else -1
        if 0x05 <= value <= 0x3F and _NAMES[number][value] is None:
            return number, value
    raise WbxmlError(f"unknown tag {element.namespace}:{element.tag}")


def _encode_other(item: object) -> bytes:
    """The OPAQUE token for bytes content; WbxmlError for anything else."""
    if not isinstance(item, bytes | bytearray):
        raise WbxmlError(f"content of type {type(item).__name__} is not str, bytes or Element")
    return bytes((OPAQUE,)) + _write_mb_uint(len(item)) + item


def _leaf_text(text: str) -> bytes:
    """An inline string's bytes; WbxmlError when STR_I cannot carry it."""
    try:
        raw = text.encode()
    except UnicodeEncodeError:
        raise WbxmlError("inline string contains a lone surrogate") from None
    if 0 in raw:
        raise WbxmlError("inline string contains NUL")
    return raw


def encode(root: Element) -> bytes:
    """Encode an ``Element`` tree as a WBXML document (canonical EAS form).

    Raises ``WbxmlError`` for an unknown namespace or tag, a string that
    contains NUL or a lone surrogate (STR_I cannot carry them), or content
    that is not an element, a string or bytes.
    """
    out = bytearray(HEADER)
    page = 0
    tokens_get = _TOKENS.get
    # An explicit stack of content iterators keeps deep trees off the interpreter
    # stack: the for loop writes an element's content until it meets a child
    # with content of its own, pushes that child's iterator and starts on it;
    # an iterator that runs out is popped and its element closed with END.
    # Known tags and clean strings take the inline path; the helpers above
    # handle (and refuse) the rest.
    stack: list[Iterator[Content]] = [iter((root,))]
    append = out.append
    while stack:
        for item in stack[-1]:
            if isinstance(item, Element):
                entry = tokens_get(item.namespace)
                token = entry[1].get(item.tag) if entry is not None else None
                if entry is None or token is None:
                    item_page, token = _token_of(item)
                else:
                    item_page = entry[0]
                if item_page != page:
                    out += bytes((SWITCH_PAGE, item_page))
                    page = item_page
                content = item.content
                if content:
                    if len(content) == 1 and type(content[0]) is str:  # a leaf: at once
                        raw = _leaf_text(content[0])
                        out += bytes((token | CONTENT_BIT, STR_I))
                        out += raw
                        out += b"\x00\x01"  # NUL, END
                        continue
                    append(token | CONTENT_BIT)
                    stack.append(iter(content))
                    break
                append(token)
            elif isinstance(item, str):
                raw = _leaf_text(item)
                append(STR_I)
                out += raw
                append(0)
            else:
                out += _encode_other(item)
        else:
            stack.pop()
            if stack:
                append(END)
    return bytes(out)
