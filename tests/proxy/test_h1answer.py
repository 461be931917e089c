"""The lean client's answer parser: framing, limits, and any bytes a backend may send."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentry.proxy.h1answer import FIELD_LIMIT, HEAD_LIMIT, INTERIM_LIMIT, AnswerParser, BadAnswer


def parse(*pieces: bytes, no_body: bool = False, eof: bool = False) -> AnswerParser:
    p = AnswerParser(no_body=no_body)
    for piece in pieces:
        p.feed(piece)
    if eof:
        p.feed_eof()
    return p


def test_a_content_length_answer() -> None:
    p = parse(b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.ms-sync.wbxml\r\n"
              b"Content-Length: 5\r\n\r\nhello")  # fmt: skip
    assert p.head is not None and p.done and p.reusable
    assert (p.head.status, p.head.reason, p.head.content_length) == (200, "OK", 5)
    assert p.head.headers["content-type"] == "application/vnd.ms-sync.wbxml"
    assert bytes(p.body) == b"hello"


def test_a_chunked_answer_with_extensions_and_trailers() -> None:
    p = parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n")  # fmt: skip
    assert p.head is not None and p.head.content_length is None
    assert p.done and p.reusable and bytes(p.body) == b"abcde"


def test_interim_answers_are_skipped_and_101_refused() -> None:
    p = parse(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
    assert p.head is not None and p.head.status == 204 and p.done
    with pytest.raises(BadAnswer, match="switched protocols"):
        parse(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n")


def test_a_body_read_to_the_close_is_never_reused() -> None:
    p = parse(b"HTTP/1.1 200 OK\r\n\r\nsome", b" bytes")
    assert p.head is not None and not p.done
    p.feed_eof()
    assert p.done and not p.reusable and bytes(p.body) == b"some bytes"
    p = parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz", eof=True)
    assert p.done and not p.reusable and bytes(p.body) == b"zz"


def test_connection_close_and_http_1_0_are_not_reused() -> None:
    assert not parse(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").reusable
    assert not parse(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").reusable


def test_head_204_and_304_have_no_body() -> None:
    p = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", no_body=True)
    assert p.done and p.head is not None and p.head.content_length == 99 and not p.body
    assert parse(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n").done


def test_bytes_after_a_framed_body_spoil_the_connection() -> None:
    p = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA")
    assert p.done and bytes(p.body) == b"ok" and not p.reusable
    p = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", b"late")
    assert p.done and not p.reusable


def test_both_framings_relay_the_chunked_body_and_close() -> None:
    p = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"2\r\nok\r\n0\r\n\r\n")  # fmt: skip
    assert p.done and bytes(p.body) == b"ok" and not p.reusable


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"HTTP/2 200 OK\r\n\r\n", "status line"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "three digits"),
        (b"HTTP/1.1 20x OK\r\n\r\n", "three digits"),
        (b"ICY 200 OK\r\n\r\n", "status line"),
        (b"HTTP/1.1 200 OK\r\nNo colon here\r\n\r\n", "malformed header"),
        (b"HTTP/1.1 200 OK\r\nA: b\r\n folded\r\n\r\n", "malformed header"),
        (b"HTTP/1.1 200 OK\r\nBad Name: b\r\n\r\n", "malformed header"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", "disagree"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n", "not a number"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1e3\r\n\r\n", "not a number"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "hexadecimal"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY", "CRLF"),
    ],
)
def test_malformed_answers(raw: bytes, reason: str) -> None:
    with pytest.raises(BadAnswer, match=reason):
        parse(raw)


def test_limits() -> None:
    with pytest.raises(BadAnswer, match="head over"):
        parse(b"HTTP/1.1 200 OK\r\nX: " + b"a" * (HEAD_LIMIT + 1))
    fields = b"".join(b"X-%d: v\r\n" % i for i in range(FIELD_LIMIT + 1))
    with pytest.raises(BadAnswer, match="header fields"):
        parse(b"HTTP/1.1 200 OK\r\n" + fields + b"\r\n")
    with pytest.raises(BadAnswer, match="chunk-size line"):
        parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 5000)


def test_a_cut_answer_is_bad_at_eof() -> None:
    with pytest.raises(BadAnswer, match="in the length"):
        parse(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", eof=True)
    with pytest.raises(BadAnswer, match="in the head"):
        parse(b"HTTP/1.1 200 O", eof=True)


def _answer(body: bytes, chunked: bool, sizes: list[int]) -> bytes:
    if not chunked:
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    out, i = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"], 0
    for n in sizes:
        piece = body[i : i + n]
        if piece:
            out.append(b"%x\r\n" % len(piece) + piece + b"\r\n")
        i += n
    if i < len(body):
        out.append(b"%x\r\n" % (len(body) - i) + body[i:] + b"\r\n")
    out.append(b"0\r\n\r\n")
    return b"".join(out)


@settings(max_examples=200, deadline=None)
@given(
    body=st.binary(max_size=300),
    chunked=st.booleans(),
    sizes=st.lists(st.integers(1, 50), max_size=10),
    cuts=st.lists(st.integers(0, 400), max_size=8),
)
def test_any_split_of_a_valid_answer_parses_the_same(
    body: bytes, chunked: bool, sizes: list[int], cuts: list[int]
) -> None:
    raw = _answer(body, chunked, sizes)
    points = sorted({min(c, len(raw)) for c in cuts})
    pieces = [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]
    p = parse(*pieces)
    assert p.done and p.reusable and bytes(p.body) == body


_PIECES = [
    b"HTTP/1.1 200 OK\r\n", b"\r\n", b"Content-Length: 3\r\n",
    b"Transfer-Encoding: chunked\r\n", b"5\r\n", b"0\r\n\r\n",
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    data=st.lists(st.one_of(st.binary(max_size=64), st.sampled_from(_PIECES)), max_size=12),
    eof=st.booleans(),
)
def test_any_bytes_are_an_answer_or_bad_answer(data: list[bytes], eof: bool) -> None:
    p = AnswerParser()
    try:
        for piece in data:
            p.feed(piece)
        if eof:
            p.feed_eof()
    except BadAnswer:
        return
    assert len(p.body) <= sum(len(d) for d in data)
    if p.done:
        assert p.head is not None


@pytest.mark.parametrize("bad", [b"a\rb", b"a\nb", b"a\0b"])
def test_a_bare_cr_lf_or_nul_in_a_field_is_refused(bad: bytes) -> None:
    with pytest.raises(BadAnswer, match="control character"):
        parse(b"HTTP/1.1 200 OK\r\nX-A: " + bad + b"\r\nContent-Length: 0\r\n\r\n")


def test_interim_answers_are_bounded() -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    final = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    assert parse(interim * INTERIM_LIMIT + final).done
    with pytest.raises(BadAnswer, match="interim"):
        parse(interim * (INTERIM_LIMIT + 1) + final)


def test_a_value_that_is_not_utf8_keeps_a_replacement_character() -> None:
    p = parse(b"HTTP/1.1 200 OK\r\nX-A: caf\xe9\r\nX-B: caf\xc3\xa9\r\nContent-Length: 0\r\n\r\n")
    assert p.head is not None
    assert (p.head.headers["X-A"], p.head.headers["X-B"]) == ("caf\ufffd", "caf\xe9")


def test_a_long_head_dripped_byte_by_byte() -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\n"
        + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 200) for i in range(200))
        + b"Content-Length: 2\r\n\r\nok"
    )
    p = parse(*(raw[i : i + 1] for i in range(len(raw))))
    assert p.done and p.head is not None and len(p.head.headers) == 201 and bytes(p.body) == b"ok"
