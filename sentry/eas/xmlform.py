"""The XML text form of a WBXML tree, for logs and tools, and its inverse.

Each element is written in its code page's namespace, declared as the default
namespace wherever it changes, e.g.::

    <FolderSync xmlns="FolderHierarchy">
      <SyncKey>0</SyncKey>
    </FolderSync>

Content that XML text cannot carry exactly is written as an element of the
``wbxml`` namespace holding base64: OPAQUE data as ``<wbxml:opaque>``, and as
``<wbxml:string>`` both strings with characters XML 1.0 forbids and the empty
string (an empty STR_I, which plain XML cannot tell from no content). A carriage
return is written as ``&#13;``, since XML parsers turn a literal one into a
line feed. Indentation is added only inside elements whose content is all
elements, and ``from_xml`` drops whitespace-only text only inside elements that
have element children; so ``from_xml(to_xml(tree)) == tree`` for every tree
whose elements do not mix whitespace-only strings with element children, and
that has no two adjacent strings (XML merges them).
"""

from __future__ import annotations

import base64
import binascii
import re
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape

from .errors import XmlFormError
from .wbxml import Content, Element

__all__ = ["WBXML_NS", "from_xml", "to_xml"]

WBXML_NS = "urn:x-sentry:wbxml"
# Characters XML 1.0 allows in text (https://www.w3.org/TR/xml/#charsets).
_XML_UNSAFE = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_TEXT = {"\r": "&#13;"}  # parsers normalise a literal CR to LF
_ATTR = {'"': "&quot;", "\r": "&#13;", "\n": "&#10;", "\t": "&#9;"}


def to_xml(root: Element, *, indent: str | None = "  ") -> str:
    """Render ``root`` as XML text (pretty-printed unless ``indent`` is None)."""
    out: list[str] = []
    _write(root, None, out, 0, indent)
    return "".join(out)


def _write(el: Element, parent_ns: str | None, out: list[str], depth: int, ind: str | None) -> None:
    ns = f' xmlns="{escape(el.namespace, _ATTR)}"' if el.namespace != parent_ns else ""
    if not el.content:
        out.append(f"<{el.tag}{ns}/>")
        return
    out.append(f"<{el.tag}{ns}>")
    pretty = ind is not None and all(isinstance(c, Element) for c in el.content)
    for item in el.content:
        if pretty:
            out.append("\n" + (ind or "") * (depth + 1))
        _write_item(item, el.namespace, out, depth + 1, ind)
    if pretty:
        out.append("\n" + (ind or "") * depth)
    out.append(f"</{el.tag}>")


def _write_item(item: Content, ns: str, out: list[str], depth: int, ind: str | None) -> None:
    if isinstance(item, Element):
        _write(item, ns, out, depth, ind)
    elif isinstance(item, bytes | bytearray):
        out.append(_special("opaque", bytes(item)))
    elif not item or _XML_UNSAFE.search(item):
        out.append(_special("string", item.encode("utf-8", "surrogatepass")))
    else:
        out.append(escape(item, _TEXT))


def _special(kind: str, raw: bytes) -> str:
    return f'<wbxml:{kind} xmlns:wbxml="{WBXML_NS}">{base64.b64encode(raw).decode()}</wbxml:{kind}>'


def from_xml(text: str) -> Element:
    """Parse the XML form back into an ``Element`` tree.

    Raises ``XmlFormError`` for malformed XML, a tag without a namespace, or bad
    base64 in a ``wbxml:`` element. Unknown tags are caught later, by ``encode``.
    """
    try:
        node = ET.fromstring(text)
    except ET.ParseError as exc:
        raise XmlFormError(f"malformed XML: {exc}") from None
    return _element(node)


def _split(tag: str) -> tuple[str, str]:
    if not tag.startswith("{"):
        raise XmlFormError(f"element <{tag}> has no namespace (code page)")
    ns, _, local = tag[1:].partition("}")
    return ns, local


def _element(node: ET.Element) -> Element:
    ns, tag = _split(node.tag)
    if ns == WBXML_NS:
        raise XmlFormError(f"<wbxml:{tag}> cannot be an element of the tree")
    if node.attrib:
        raise XmlFormError(f"<{tag}> has attributes; WBXML elements have none")
    content: list[Content] = []
    children = list(node)
    special = [_split(child.tag)[0] == WBXML_NS for child in children]
    # Whitespace-only text beside element children is indentation, not content.
    indented = not all(special)
    if node.text and not (indented and node.text.isspace()):
        content.append(node.text)
    for child, is_special in zip(children, special, strict=True):
        content.append(_special_content(child) if is_special else _element(child))
        if child.tail and not (indented and child.tail.isspace()):
            content.append(child.tail)
    return Element(ns, tag, tuple(content))


def _special_content(node: ET.Element) -> Content:
    """The bytes or string held by a ``<wbxml:opaque>`` or ``<wbxml:string>``."""
    _, tag = _split(node.tag)
    if node.attrib or len(node):
        raise XmlFormError(f"<wbxml:{tag}> may hold only base64 text")
    try:
        raw = base64.b64decode(node.text or "", validate=True)
    except binascii.Error as exc:
        raise XmlFormError(f"<wbxml:{tag}> holds invalid base64: {exc}") from None
    if tag == "opaque":
        return raw
    if tag == "string":
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise XmlFormError("<wbxml:string> is not UTF-8") from None
    raise XmlFormError(f"unknown element <wbxml:{tag}>")
