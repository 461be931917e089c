"""Malformed and over-limit WBXML: every way in must end in ``WbxmlError``.

The table gives each malformed body with the message (a substring) and the
byte offset the error must carry, so a regression that still fails but for
the wrong reason, or at the wrong place, is caught too. Then the limits, each
at exactly its bound and one past it; then ``encode``'s refusals.
"""

from __future__ import annotations

import contextlib
import re

import pytest

from sentry.eas.errors import WbxmlError
from sentry.eas.wbxml import DEFAULT_LIMITS, Element, Limits, decode, encode

H = "03 01 6A 00"  # the EAS header: WBXML 1.3, unknown public id, UTF-8, no string table

UNUSED_GLOBALS = {
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

# (id, body hex, message substring, offset)
MALFORMED = [
    # header
    ("empty", "", "shorter than the 4-byte WBXML header", 0),
    ("short-header", "03 01 6A", "shorter than the 4-byte WBXML header", 0),
    ("version-0", "00 01 6A 00 45 01", "unsupported WBXML version byte 0x00", 0),
    ("version-4", "04 01 6A 00 45 01", "unsupported WBXML version byte 0x04", 0),
    ("version-ff", "FF 01 6A 00 45 01", "unsupported WBXML version byte 0xFF", 0),
    ("charset-latin1", "03 01 04 00 45 01", "charset 4 is not UTF-8 (106)", 2),
    ("charset-utf16", "03 01 81 7B 00 45 01", "charset 251 is not UTF-8 (106)", 2),
    ("charset-unknown", "03 01 00 00 45 01", "charset 0 is not UTF-8 (106)", 2),
    ("public-id-truncated", "03 81 81 81", "truncated multi-byte integer", 1),
    ("public-id-6-bytes", "03 81 81 81 81 81 01 6A 00", "longer than 5 bytes", 1),
    ("string-table-overrun", "03 01 6A 05 41 42", "string table runs past the end", 4),
    ("string-table-length-truncated", "03 01 6A 85", "truncated multi-byte integer", 3),
    # mb_u_int32 (in an OPAQUE length)
    ("mb-uint-truncated", f"{H} 45 C3 81", "truncated multi-byte integer", 6),
    ("mb-uint-truncated-at-end", f"{H} 45 C3", "truncated multi-byte integer", 6),
    ("mb-uint-6-bytes", f"{H} 45 C3 81 81 81 81 81 01", "longer than 5 bytes", 6),
    ("mb-uint-33-bits", f"{H} 45 C3 90 80 80 80 00 01", "exceeds 32 bits", 6),
    # structure
    ("end-at-top-level", f"{H} 01", "END without an open element", 4),
    ("end-before-root", f"{H} 00 07 01 56 01", "END without an open element", 6),
    ("str-i-outside-element", f"{H} 03 41 00 45 01", "inline string outside any element", 4),
    ("opaque-outside-element", f"{H} C3 01 41 45 01", "opaque data outside any element", 4),
    ("str-i-unterminated", f"{H} 45 03 41 42", "unterminated inline string", 5),
    ("str-i-unterminated-empty", f"{H} 45 03", "unterminated inline string", 5),
    ("str-i-bad-utf8", f"{H} 45 03 FF 00 01", "inline string is not UTF-8", 5),
    ("str-i-truncated-utf8", f"{H} 45 03 E2 82 00 01", "inline string is not UTF-8", 5),
    ("str-i-overlong-nul", f"{H} 45 03 C0 80 00 01", "inline string is not UTF-8", 5),
    ("str-i-surrogate", f"{H} 45 03 ED A0 80 00 01", "inline string is not UTF-8", 5),
    ("str-i-above-unicode", f"{H} 45 03 F4 90 80 80 00 01", "inline string is not UTF-8", 5),
    ("opaque-overrun", f"{H} 45 C3 05 41 42 01", "opaque data claims 5 bytes, 3 present", 5),
    ("opaque-overrun-empty", f"{H} 45 C3 01", "opaque data claims 1 bytes, 0 present", 5),
    ("switch-page-26", f"{H} 00 1A 45 01", "unknown code page 26", 4),
    ("switch-page-255", f"{H} 00 FF 45 01", "unknown code page 255", 4),
    ("switch-page-mid-document", f"{H} 45 00 1A 05 01", "unknown code page 26", 5),
    ("switch-page-truncated", f"{H} 45 00", "truncated SWITCH_PAGE", 5),
    ("switch-page-truncated-no-root", f"{H} 00", "truncated SWITCH_PAGE", 4),
    ("data-after-root", f"{H} 45 01 45 01", "data after the root element", 6),
    ("empty-tag-after-empty-root", f"{H} 05 05", "data after the root element", 5),
    ("switch-page-after-root", f"{H} 45 01 00 00", "data after the root element", 6),
    ("end-after-root", f"{H} 45 01 01", "data after the root element", 6),
    ("str-i-after-root", f"{H} 45 01 03 00", "data after the root element", 6),
    ("no-root", H, "body has no root element", 4),
    ("no-root-only-switch", f"{H} 00 07", "body has no root element", 6),
    ("unclosed-root", f"{H} 45", "body ends inside <Sync>", 5),
    ("unclosed-child", f"{H} 00 07 56 4C 03 31 00", "body ends inside <Status>", 11),
    ("unclosed-after-child", f"{H} 00 07 56 4C 03 31 00 01", "body ends inside <FolderSync>", 12),
    # attributes (bit 0x80) are never used in EAS
    ("attribute-empty-tag", f"{H} 85 01", "tag 0x85 has attributes", 4),
    ("attribute-content-tag", f"{H} C5 01 01", "tag 0xC5 has attributes", 4),
    ("attribute-highest", f"{H} 45 FF 01 01", "tag 0xFF has attributes", 5),
    ("attribute-lowest-content", f"{H} 45 BF 01", "tag 0xBF has attributes", 5),
] + [
    (f"global-{name}", f"{H} 45 {token:02X} 01", f"global token {name} is not used in EAS", 5)
    for token, name in UNUSED_GLOBALS.items()
]


@pytest.mark.parametrize(
    ("hex_", "message", "offset"),
    [pytest.param(h, m, o, id=i) for i, h, m, o in MALFORMED],
)
def test_malformed_body_raises_wbxml_error(hex_, message, offset):
    with pytest.raises(WbxmlError, match=re.escape(message)) as info:
        decode(bytes.fromhex(hex_))
    assert info.value.offset == offset
    assert info.value.message.endswith(f"(at byte {offset})")
    assert info.value.http_status == 400


def test_every_byte_value_decodes_or_raises_wbxml_error():
    # Each of the 256 values is a tag (with or without content), a global token
    # EAS uses, or one of the refusals above: none falls through to another error.
    for b in range(256):
        body = bytes.fromhex(f"{H} 45") + bytes((b,)) + bytes.fromhex("01 01")
        with contextlib.suppress(WbxmlError):
            decode(body)


# Bodies the decoder accepts although no EAS client sends them this way.
TOLERATED = [
    ("string-table-skipped", "03 01 6A 02 41 00 45 01", Element("AirSync", "Sync")),
    ("public-id-string-index", "03 00 00 6A 00 45 01", Element("AirSync", "Sync")),
    ("version-1.1", "01 01 6A 00 45 01", Element("AirSync", "Sync")),
    ("version-1.2", "02 01 6A 00 45 01", Element("AirSync", "Sync")),
    ("charset-non-minimal", "03 01 80 6A 00 45 01", Element("AirSync", "Sync")),
    ("empty-root", f"{H} 05", Element("AirSync", "Sync")),
    ("opaque-length-non-minimal", f"{H} 45 C3 80 01 41 01", Element("AirSync", "Sync", (b"A",))),
    ("opaque-32-bit-max-length-field", f"{H} 45 C3 00 01", Element("AirSync", "Sync", (b"",))),
    ("empty-string", f"{H} 45 03 00 01", Element("AirSync", "Sync", ("",))),
    ("nul-in-opaque", f"{H} 45 C3 01 00 01", Element("AirSync", "Sync", (b"\0",))),
    ("content-tag-without-content", f"{H} 45 01", Element("AirSync", "Sync")),
    (
        "mixed-content",
        f"{H} 45 03 61 00 C3 01 62 05 03 63 00 01",
        Element("AirSync", "Sync", ("a", b"b", Element("AirSync", "Sync"), "c")),
    ),
]


@pytest.mark.parametrize(("hex_", "tree"), [pytest.param(h, t, id=i) for i, h, t in TOLERATED])
def test_tolerated_body_decodes(hex_, tree):
    assert decode(bytes.fromhex(hex_)) == tree


def test_unknown_token_is_kept_by_default():
    # AirSync defines tokens up to 0x29; AirNotify (page 3) defines none.
    assert decode(bytes.fromhex(f"{H} 45 2A 01")) == Element(
        "AirSync", "Sync", (Element("AirSync", "Unknown_2A"),)
    )
    assert decode(bytes.fromhex(f"{H} 00 03 7F 03 78 00 01")) == Element(
        "AirNotify", "Unknown_3F", ("x",)
    )


@pytest.mark.parametrize(
    ("hex_", "message", "offset"),
    [
        (f"{H} 45 2A 01", "unknown token 0x2A on code page 0", 5),
        (f"{H} 00 03 45 01", "unknown token 0x05 on code page 3", 6),
        (f"{H} 00 03 7F 01", "unknown token 0x3F on code page 3", 6),
    ],
)
def test_unknown_token_refused_when_not_allowed(hex_, message, offset):
    with pytest.raises(WbxmlError, match=re.escape(message)) as info:
        decode(bytes.fromhex(hex_), Limits(allow_unknown=False))
    assert info.value.offset == offset


def test_default_limits_are_the_documented_ones():
    assert Limits() == DEFAULT_LIMITS
    assert DEFAULT_LIMITS.max_depth == 32
    assert DEFAULT_LIMITS.allow_unknown is True


# Limits: each one passes at its bound and fails one past it.


def nested(depth: int, *, leaf_empty: bool) -> bytes:
    """``depth`` nested AirSync Sync elements; the innermost empty or holding "x"."""
    if leaf_empty:
        return bytes.fromhex(H) + b"\x45" * (depth - 1) + b"\x05" + b"\x01" * (depth - 1)
    return bytes.fromhex(H) + b"\x45" * depth + b"\x03x\x00" + b"\x01" * depth


def flat(elements: int) -> bytes:
    """A Sync root with ``elements - 1`` empty Status children."""
    return bytes.fromhex(f"{H} 45") + b"\x0e" * (elements - 1) + b"\x01"


def with_string(length: int) -> bytes:
    return bytes.fromhex(f"{H} 45 03") + b"s" * length + bytes.fromhex("00 01")


def mb_u_int32(value: int) -> bytes:
    """Big-endian base-128, as WBXML writes lengths."""
    out = [value & 0x7F]
    while value > 0x7F:
        value >>= 7
        out.append(0x80 | value & 0x7F)
    return bytes(reversed(out))


def with_opaque(length: int) -> bytes:
    return bytes.fromhex(f"{H} 45 C3") + mb_u_int32(length) + b"o" * length + b"\x01"


def body_of_size(size: int) -> bytes:
    return with_string(size - 8)  # header 4, tag, STR_I, NUL, END


@pytest.mark.parametrize(
    ("limit", "build", "message"),
    [
        pytest.param("max_size", body_of_size, "exceeds the limit of", id="max_size"),
        pytest.param(
            "max_depth",
            lambda n: nested(n, leaf_empty=False),
            "nested deeper than",
            id="max_depth-content-leaf",
        ),
        pytest.param(
            "max_depth",
            lambda n: nested(n, leaf_empty=True),
            "nested deeper than",
            id="max_depth-empty-leaf",
        ),
        pytest.param("max_elements", flat, "more than", id="max_elements"),
        pytest.param("max_string", with_string, "inline string longer than", id="max_string"),
        pytest.param("max_opaque", with_opaque, "opaque data of", id="max_opaque"),
    ],
)
@pytest.mark.parametrize("bound", [1, 2, 32, 200])
def test_limit_holds_at_bound_and_trips_one_past_it(limit, build, message, bound):
    if limit == "max_size":
        bound += 8  # the smallest body with a string is 8 bytes
    limits = Limits(**{limit: bound})
    decode(build(bound), limits)
    with pytest.raises(WbxmlError, match=re.escape(message)):
        decode(build(bound + 1), limits)


def test_max_string_counts_a_string_terminated_far_past_the_limit():
    body = with_string(1000)
    with pytest.raises(WbxmlError, match="inline string longer than 10 bytes"):
        decode(body, Limits(max_string=10))


def test_max_opaque_is_checked_before_the_length_is_trusted():
    # A 4 GiB claim in a 12-byte body is refused for its size, not read.
    body = bytes.fromhex(f"{H} 45 C3 8F FF FF FF 7F 01")
    with pytest.raises(WbxmlError, match="opaque data of 4294967295 bytes exceeds the limit"):
        decode(body)


def test_limits_apply_to_the_real_vectors():
    vector_6 = bytes.fromhex(
        "03 01 6A 00 45 5C 4F 50 03 43 6F 6E 74 61 63 74 73 00 01 4B 03 32 00 01 52 03 32 00"
        " 01 4E 03 31 00 01 56 47 4D 03 32 3A 31 00 01 5D 00 11 4A 46 03 31 00 01 4C 03 30 00"
        " 01 4D 03 31 00 01 01 00 01 5E 03 46 75 6E 6B 2C 20 44 6F 6E 00 01 5F 03 44 6F 6E 00"
        " 01 69 03 46 75 6E 6B 00 01 00 11 56 03 31 00 01 01 01 01 01 01 01"
    )
    # Sync > Collections > Collection > Commands > Add > ApplicationData > Body > Type: 8 deep,
    # 19 elements, longest string "Funk, Don" (9 bytes), 106 bytes in all.
    decode(vector_6, Limits(max_depth=8, max_elements=19, max_string=9, max_size=106))
    for tight in (
        Limits(max_depth=7),
        Limits(max_elements=18),
        Limits(max_string=8),
        Limits(max_size=105),
    ):
        with pytest.raises(WbxmlError):
            decode(vector_6, tight)


def test_deep_nesting_is_refused_by_depth_not_recursion():
    body = bytes.fromhex(H) + b"\x45" * 100_000
    with pytest.raises(WbxmlError, match="nested deeper than 32") as info:
        decode(body)
    assert info.value.offset == 4 + 32


def test_deep_nesting_within_a_raised_limit_needs_no_recursion():
    depth = 100_000
    body = nested(depth, leaf_empty=True)
    tree = decode(body, Limits(max_depth=depth))
    assert encode(tree) == body
    with pytest.raises(WbxmlError, match="body ends inside <Sync>"):
        decode(body[:-1], Limits(max_depth=depth))


# encode refuses what WBXML (or our code pages) cannot carry.


@pytest.mark.parametrize(
    ("tree", "message"),
    [
        pytest.param(Element("Nope", "Sync"), "unknown namespace 'Nope'", id="namespace"),
        pytest.param(Element("airsync", "Sync"), "unknown namespace 'airsync'", id="ns-case"),
        pytest.param(Element("AirSync", "Nope"), "unknown tag AirSync:Nope", id="tag"),
        pytest.param(Element("AirSync", "sync"), "unknown tag AirSync:sync", id="tag-case"),
        pytest.param(
            Element("AirSync", "Sync", (Element("Email", "Sync"),)),
            "unknown tag Email:Sync",
            id="tag-of-another-page",
        ),
        pytest.param(Element("AirSync", "Unknown_05"), "unknown tag", id="unknown-but-defined"),
        pytest.param(Element("AirSync", "Unknown_2a"), "unknown tag", id="unknown-lowercase"),
        pytest.param(Element("AirSync", "Unknown_2"), "unknown tag", id="unknown-one-digit"),
        pytest.param(Element("AirSync", "Unknown_02A"), "unknown tag", id="unknown-three"),
        pytest.param(Element("AirSync", "Unknown_ 2A"), "unknown tag", id="unknown-space"),
        pytest.param(Element("AirNotify", "Unknown_04"), "unknown tag", id="unknown-global"),
        pytest.param(Element("AirNotify", "Unknown_40"), "unknown tag", id="unknown-too-big"),
        pytest.param(Element("AirNotify", "Unknown_"), "unknown tag", id="unknown-no-digits"),
        pytest.param(Element("AirSync", "Sync", ("a\0b",)), "contains NUL", id="nul"),
        pytest.param(Element("AirSync", "Sync", ("\0",)), "contains NUL", id="only-nul"),
        pytest.param(
            Element("AirSync", "Sync", (Element("AirSync", "Status", ("1\0",)),)),
            "contains NUL",
            id="nul-deep",
        ),
        pytest.param(Element("AirSync", "Sync", ("\ud800",)), "lone surrogate", id="surrogate"),
        pytest.param(Element("AirSync", "Sync", ("a\udfffb",)), "lone surrogate", id="low-sur"),
        pytest.param(
            Element("AirSync", "Sync", ("\ud83d\ude00",)), "lone surrogate", id="surrogate-pair"
        ),
        pytest.param(
            Element("AirSync", "Sync", (42,)),  # type: ignore[arg-type]
            "content of type int",
            id="int-content",
        ),
    ],
)
def test_encode_refuses(tree, message):
    with pytest.raises(WbxmlError, match=re.escape(message)):
        encode(tree)


def test_encode_writes_unknown_tags_back_as_their_token():
    tree = Element("AirSync", "Sync", (Element("AirSync", "Unknown_2A"),))
    assert encode(tree) == bytes.fromhex(f"{H} 45 2A 01")
    assert encode(Element("AirNotify", "Unknown_3F")) == bytes.fromhex(f"{H} 00 03 3F")


def test_encode_writes_multibyte_lengths_big_endian():
    for length, prefix in ((127, "7F"), (128, "81 00"), (300, "82 2C"), (16384, "81 80 00")):
        body = encode(Element("AirSync", "Sync", (b"x" * length,)))
        assert body.startswith(bytes.fromhex(f"{H} 45 C3 {prefix}"))
        assert decode(body).opaque == b"x" * length


def test_encode_takes_a_bytearray_as_opaque_data():
    tree = Element("Provision", "Data", (bytearray(b"ABC"),))
    assert encode(tree) == bytes.fromhex(f"{H} 00 0E 4A C3 03 41 42 43 01")
    assert decode(encode(tree)) == Element("Provision", "Data", (b"ABC",))
