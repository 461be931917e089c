"""Hypothesis properties of the WBXML codec and its XML form.

Trees are drawn over all 26 code pages: a random page, then a tag from that
page (any token, legacy ones included, or an ``Unknown_XX`` for a value the page
leaves free), with content mixing child elements, strings (any Unicode except
NUL and surrogates, which STR_I cannot carry) and bytes. Inputs for the
decoder are random bytes and mutations (bit flips, truncations, insertions,
deletions) of valid encodings; whatever the input, the decoder either returns
a tree that re-encodes exactly or raises ``WbxmlError``, and nothing else.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentry.eas.codepages import PAGES, CodePage
from sentry.eas.errors import WbxmlError, XmlFormError
from sentry.eas.wbxml import DEFAULT_LIMITS, Content, Element, Limits, decode, encode
from sentry.eas.xmlform import WBXML_NS, from_xml, to_xml

HEADER = b"\x03\x01\x6a\x00"
PROPERTY = settings(max_examples=300)


def tags_of(page: CodePage) -> st.SearchStrategy[tuple[str, str]]:
    """A tag of ``page``: mostly a defined token, sometimes a free one."""
    known = [t.name for t in page.tokens]
    free = [f"Unknown_{v:02X}" for v in range(0x05, 0x40) if v not in page.by_value]
    choices = [st.sampled_from(known)] * 2 if known else []  # (Email defines all 59 values;
    choices += [st.sampled_from(free)] if free else []  # AirNotify none)
    return st.one_of(choices).map(lambda name: (page.namespace, name))


TAGS = st.one_of([tags_of(page) for page in PAGES])  # a random page, then a tag on it
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)
LEAVES: st.SearchStrategy[Content] = st.one_of(TEXT, st.binary(max_size=40))


def make(tag: tuple[str, str], content: list[Content]) -> Element:
    return Element(tag[0], tag[1], tuple(content))


def levels(depth: int) -> st.SearchStrategy[Element]:
    """Trees at most ``depth`` levels below the root, with up to 5 items per element,
    three in four of them elements while the depth allows. The strategies are built
    once, bottom up: drawing a tree creates no new strategy objects."""
    tree = st.builds(make, TAGS, st.lists(LEAVES, max_size=5))
    for _ in range(depth):
        tree = st.builds(make, TAGS, st.lists(st.one_of(LEAVES, tree, tree, tree), max_size=5))
    return tree


_LEVELS = levels(5)


@st.composite
def trees(draw: st.DrawFn) -> Element:
    """(A small-repr handle on ``_LEVELS``, whose nested repr is megabytes.)"""
    return draw(_LEVELS)


TREES = trees()


@PROPERTY
@given(TREES)
def test_decode_inverts_encode(tree):
    assert decode(encode(tree)) == tree


@PROPERTY
@given(TREES)
def test_encoding_is_canonical(tree):
    data = encode(tree)
    assert encode(decode(data)) == data
    assert data.startswith(HEADER)


@PROPERTY
@given(TREES)
def test_decoded_trees_keep_every_limit_they_are_given(tree):
    data = encode(tree)
    depth, count = shape(tree)
    exact = Limits(max_size=len(data), max_depth=depth, max_elements=count)
    assert decode(data, exact) == tree


def shape(tree: Element) -> tuple[int, int]:
    """(depth, number of elements) of ``tree``."""
    children = tree.children
    sub = [shape(c) for c in children]
    return 1 + max((d for d, _ in sub), default=0), 1 + sum(n for _, n in sub)


def check_decode(data: bytes, limits: Limits = DEFAULT_LIMITS) -> None:
    """decode either raises WbxmlError or returns a tree that round-trips."""
    try:
        tree = decode(data, limits)
    except WbxmlError:
        return
    again = encode(tree)
    assert decode(again, limits) == tree
    assert encode(decode(again)) == again


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_wbxml_error(data):
    check_decode(data)


@settings(max_examples=500)
@given(st.binary(max_size=300), st.booleans())
def test_random_bodies_after_a_valid_header_only_raise_wbxml_error(body, strict):
    check_decode(HEADER + body, Limits(allow_unknown=not strict))


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid encoding with one to three random edits."""
    data = bytearray(encode(draw(TREES)))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "byte"]))
        if kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif at < len(data) and kind == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif at < len(data) and kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif at < len(data):
            data[at] = draw(st.integers(0, 255))
    return bytes(data)


@settings(max_examples=500)
@given(mutated(), st.booleans())
def test_mutated_encodings_only_raise_wbxml_error(data, strict):
    check_decode(data, Limits(allow_unknown=not strict, max_depth=4, max_string=10))
    check_decode(data)


@PROPERTY
@given(TREES, st.data())
def test_every_truncation_of_an_encoding_is_refused(tree, data):
    body = encode(tree)
    cut = data.draw(st.integers(0, len(body) - 1))
    try:
        decode(body[:cut])
    except WbxmlError:
        return
    raise AssertionError(f"a {cut}-byte prefix of a {len(body)}-byte body decoded")


# The XML form.


def xml_safe(tree: Element) -> Element:
    """``tree`` made representable in XML text: adjacent strings merged, and
    whitespace-only strings dropped from elements that have element children."""
    content: list[Content] = []
    for item in tree.content:
        if isinstance(item, Element):
            content.append(xml_safe(item))
        elif isinstance(item, str) and content and isinstance(content[-1], str):
            content[-1] += item
        else:
            content.append(item)
    if any(isinstance(c, Element) for c in content):
        content = [c for c in content if not (isinstance(c, str) and c.isspace())]
    return Element(tree.namespace, tree.tag, tuple(content))


WHITESPACE_HEAVY = st.text(st.sampled_from(" \t\r\n<>&\"'\x01\x7f\ufffe"), max_size=6)


@PROPERTY
@given(TREES.map(xml_safe), st.sampled_from(["  ", "\t", "", None]))
def test_xml_form_round_trips(tree, indent):
    text = to_xml(tree, indent=indent)
    assert from_xml(text) == tree
    assert encode(from_xml(text)) == encode(tree)


@PROPERTY
@given(WHITESPACE_HEAVY, TAGS, st.booleans())
def test_xml_form_keeps_awkward_text_exactly(text, tag, with_opaque):
    content: tuple[Content, ...] = (text, b"\x00") if with_opaque else (text,)
    tree = Element(tag[0], tag[1], content)
    assert from_xml(to_xml(tree)) == tree


@PROPERTY
@given(TREES)
def test_xml_form_of_any_tree_parses(tree):
    # Even trees outside the round-trip class render as well-formed XML whose
    # elements are the tree's elements.
    back = from_xml(to_xml(tree))
    assert shape(back) == shape(tree)
    assert (back.namespace, back.tag) == (tree.namespace, tree.tag)


# The XML form's exact cases, one by one (each was lost before it was fixed).


def test_xml_form_keeps_an_empty_string_apart_from_no_content():
    empty_string = Element("AirSync", "Status", ("",))
    assert encode(empty_string) != encode(Element("AirSync", "Status"))
    assert to_xml(empty_string) == (
        '<Status xmlns="AirSync"><wbxml:string xmlns:wbxml="urn:x-sentry:wbxml"></wbxml:string>'
        "</Status>"
    )
    assert from_xml(to_xml(empty_string)) == empty_string
    assert from_xml('<Status xmlns="AirSync"></Status>') == Element("AirSync", "Status")


def test_xml_form_keeps_carriage_returns():
    tree = Element("Email", "Subject", ("a\r\nb\rc",))
    assert to_xml(tree) == '<Subject xmlns="Email">a&#13;\nb&#13;c</Subject>'
    assert from_xml(to_xml(tree)) == tree


def test_xml_form_keeps_whitespace_beside_opaque_data():
    tree = Element("Provision", "Data", (" ", b"\x00\xff", "\n"))
    assert from_xml(to_xml(tree)) == tree


def test_xml_form_drops_only_indentation():
    text = '<Sync xmlns="AirSync">\n  <Status> 1 </Status>\n  <Limit>\t</Limit>\n</Sync>'
    assert from_xml(text) == Element(
        "AirSync",
        "Sync",
        (Element("AirSync", "Status", (" 1 ",)), Element("AirSync", "Limit", ("\t",))),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<Sync>", "malformed XML"),
        ("<Sync/>", "has no namespace"),
        ('<Sync xmlns="AirSync" a="1"/>', "has attributes"),
        (f'<w:opaque xmlns:w="{WBXML_NS}">AA==</w:opaque>', "cannot be an element of the tree"),
        (f'<Sync xmlns="AirSync"><w:opaque xmlns:w="{WBXML_NS}">A</w:opaque></Sync>', "base64"),
        (f'<Sync xmlns="AirSync"><w:string xmlns:w="{WBXML_NS}">/w==</w:string></Sync>', "UTF-8"),
        (f'<Sync xmlns="AirSync"><w:x xmlns:w="{WBXML_NS}"/></Sync>', "unknown element"),
        (
            f'<Sync xmlns="AirSync"><w:opaque xmlns:w="{WBXML_NS}"><Sync/></w:opaque></Sync>',
            "may hold only base64 text",
        ),
        (
            f'<Sync xmlns="AirSync"><w:opaque xmlns:w="{WBXML_NS}" n="1">AA==</w:opaque></Sync>',
            "may hold only base64 text",
        ),
    ],
)
def test_from_xml_refuses(text, message):
    with pytest.raises(XmlFormError, match=message):
        from_xml(text)
