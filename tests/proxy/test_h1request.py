"""The device-side request parser: heads, limits, chunked bodies, any bytes a device sends."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentry.proxy.h1request import BadRequest, ChunkedDecoder, Limits, RequestHead, parse_head

L = Limits()
SECRET = b"s3cr3t-Pa55"  # put in bad requests: no reason may quote it
KINDS = {
    "bad_request_line", "bad_version", "bad_header", "obs_fold", "line_too_long",
    "header_too_large", "too_many_headers", "bad_content_length", "bad_framing",
    "unsupported_transfer_coding", "bad_chunk",
}  # fmt: skip
STATUS = {"line_too_long": 414, "header_too_large": 431, "too_many_headers": 431}
STATUS["unsupported_transfer_coding"] = 501

EAS_HEAD = (
    b"POST /Microsoft-Server-ActiveSync?Cmd=Ping&User=alice&DeviceId=X&DeviceType=iPhone "
    b"HTTP/1.1\r\n"
    b"Host: mail.example.com\r\n"
    b"Authorization: Basic YWxpY2U6czNjcjN0\r\n"
    b"MS-ASProtocolVersion: 16.1\r\n"
    b"Content-Type: application/vnd.ms-sync.wbxml\r\n"
    b"Content-Length: 13\r\n"
    b"User-Agent: Apple-iPhone14C2/2006.100\r\n"
    b"\r\n"
)


def parse(raw: bytes | bytearray, limits: Limits = L, start: int = 0) -> tuple[RequestHead, int]:
    got = parse_head(raw, limits, start)
    assert got is not None
    return got


def bad(raw: bytes, limits: Limits = L) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        parse_head(raw, limits)
    err = info.value
    assert err.kind in KINDS and err.status == STATUS.get(err.kind, 400)
    assert SECRET.decode() not in err.reason and SECRET.decode() not in str(err)
    return err


def summary(head: RequestHead) -> tuple[object, ...]:
    return (
        head.method, head.target, head.version, head.raw_headers, head.content_length,
        head.chunked, head.keep_alive, head.expect,
    )  # fmt: skip


def drip(raw: bytes, limits: Limits = L) -> tuple[RequestHead, int]:
    """The server's loop, a byte a read: call after each read until a head comes."""
    buf = bytearray()
    for i in range(len(raw)):
        buf += raw[i : i + 1]
        got = parse_head(buf, limits)
        if got is not None:
            return got
    raise AssertionError("no head")


def req(*fields: bytes, line: bytes = b"GET / HTTP/1.1") -> bytes:
    return line + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n"


# ---- heads


def test_a_typical_eas_request_head() -> None:
    head, end = parse(EAS_HEAD + b"wbxml-payload")
    assert end == len(EAS_HEAD)
    assert head.method == "POST"
    assert (
        head.target
        == "/Microsoft-Server-ActiveSync?Cmd=Ping&User=alice&DeviceId=X&DeviceType=iPhone"
    )
    assert head.version == (1, 1)
    assert head.raw_headers == (
        (b"Host", b"mail.example.com"),
        (b"Authorization", b"Basic YWxpY2U6czNjcjN0"),
        (b"MS-ASProtocolVersion", b"16.1"),
        (b"Content-Type", b"application/vnd.ms-sync.wbxml"),
        (b"Content-Length", b"13"),
        (b"User-Agent", b"Apple-iPhone14C2/2006.100"),
    )
    assert (head.content_length, head.chunked, head.keep_alive, head.expect) == (
        13, False, True, False,
    )  # fmt: skip


def test_a_bytearray_buffer_and_a_start_offset() -> None:
    head, end = parse(bytearray(EAS_HEAD))
    assert summary(head) == summary(parse(EAS_HEAD)[0]) and end == len(EAS_HEAD)
    head2, end2 = parse(b"junk" + EAS_HEAD, start=4)
    assert summary(head2) == summary(head) and end2 == 4 + len(EAS_HEAD)


def test_repeats_are_kept_in_order_and_names_as_sent() -> None:
    head, _ = parse(req(b"X-A: 1", b"Accept: */*", b"x-a: 2", b"X-A: 3", b"COOKIE: c=1"))
    assert head.raw_headers == (
        (b"X-A", b"1"), (b"Accept", b"*/*"), (b"x-a", b"2"), (b"X-A", b"3"), (b"COOKIE", b"c=1"),
    )  # fmt: skip


def test_values_are_trimmed_of_ows_only() -> None:
    head, _ = parse(
        req(b"X-A: \t a  b \t ", b"X-B:", b"X-C:   ", b"X-D:v", b"X-E: caf\xc3\xa9\xff")
    )
    assert head.raw_headers == (
        (b"X-A", b"a  b"), (b"X-B", b""), (b"X-C", b""), (b"X-D", b"v"),
        (b"X-E", b"caf\xc3\xa9\xff"),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("version", "fields", "keep_alive"),
    [
        (b"HTTP/1.1", [], True),
        (b"HTTP/1.1", [b"Connection: close"], False),
        (b"HTTP/1.1", [b"Connection: Keep-Alive, CLOSE"], False),
        (b"HTTP/1.1", [b"Connection: keep-alive", b"Connection: te ,\tclose "], False),
        (b"HTTP/1.1", [b"Connection: closed"], True),
        (b"HTTP/1.1", [b"Connection: keep-alive"], True),
        (b"HTTP/1.0", [], False),
        (b"HTTP/1.0", [b"Connection: keep-alive"], True),
        (b"HTTP/1.0", [b"Connection: TE, Keep-Alive"], True),
        (b"HTTP/1.0", [b"Connection: te", b"connection: keep-alive"], True),
        (b"HTTP/1.0", [b"Connection: keep-alive, close"], False),
        (b"HTTP/1.0", [b"Keep-Alive: timeout=5"], False),
    ],
)
def test_keep_alive(version: bytes, fields: list[bytes], keep_alive: bool) -> None:
    head, _ = parse(req(*fields, line=b"GET / " + version))
    assert head.keep_alive is keep_alive
    assert head.version == ((1, 1) if version == b"HTTP/1.1" else (1, 0))


def test_expect_is_any_expect_field() -> None:
    assert parse(req(b"Expect: 100-continue"))[0].expect
    assert parse(req(b"expect: whatever"))[0].expect
    assert not parse(req(b"Expected: 1"))[0].expect


def test_framing_fields() -> None:
    head, _ = parse(req(b"Content-Length: 0"))
    assert (head.content_length, head.chunked) == (0, False)
    head, _ = parse(req(b"content-length: 0000000000000000042"))  # 19 digits
    assert head.content_length == 42
    head, _ = parse(req(b"Content-Length:9999999999999999999"))
    assert head.content_length == 9999999999999999999
    head, _ = parse(req(b"Transfer-Encoding:  Chunked "))
    assert (head.content_length, head.chunked) == (None, True)
    head, _ = parse(req())
    assert (head.content_length, head.chunked) == (None, False)


def test_leading_empty_lines() -> None:
    for n in range(5):
        head, end = parse(b"\r\n" * n + EAS_HEAD)
        assert end == 2 * n + len(EAS_HEAD) and head.method == "POST"
    assert bad(b"\r\n" * 5 + EAS_HEAD).kind == "bad_request_line"
    assert parse_head(b"\r\n" * 4 + b"\r", L) is None
    assert bad(b"\r\n\nGET / HTTP/1.1\r\n\r\n").kind == "bad_request_line"


def test_a_non_utf8_target_round_trips() -> None:
    raw_target = b"/p?q=caf\xe9&r=\xc3\xa9\xff\x80"
    head, _ = parse(req(line=b"GET " + raw_target + b" HTTP/1.1"))
    assert head.target.encode("utf-8", "surrogateescape") == raw_target
    assert head.target[-2:] == "\udcff\udc80"


@pytest.mark.parametrize(
    ("line", "status", "kind"),
    [
        (b"GET  / HTTP/1.1", 400, "bad_request_line"),
        (b"GET /  HTTP/1.1", 400, "bad_request_line"),
        (b" GET / HTTP/1.1", 400, "bad_request_line"),
        (b"GET / HTTP/1.1 ", 400, "bad_request_line"),
        (b"GET /", 400, "bad_request_line"),
        (b"GET / HTTP/1.1 x", 400, "bad_request_line"),
        (b"GET\t/ HTTP/1.1", 400, "bad_request_line"),
        (b"GET /a\tb HTTP/1.1", 400, "bad_request_line"),
        (b"GET /a\x7fb HTTP/1.1", 400, "bad_request_line"),
        (b"GET /a\x00b HTTP/1.1", 400, "bad_request_line"),
        (b"GET /" + SECRET + b"\x01 HTTP/1.1", 400, "bad_request_line"),
        (b"GET /a\rb HTTP/1.1", 400, "bad_request_line"),
        (b"GET /a\nb HTTP/1.1", 400, "bad_request_line"),
        (b"GET / HTTP/1.1\n", 400, "bad_request_line"),
        (b"G(T / HTTP/1.1", 400, "bad_request_line"),
        (b"G\xc3\xa9T / HTTP/1.1", 400, "bad_request_line"),
        (b"GET / http/1.1", 400, "bad_request_line"),
        (b"GET / HTTP/1.1x", 400, "bad_request_line"),
        (b"GET / HTTP/", 400, "bad_request_line"),
        (b"GET / HTTP/1.", 400, "bad_request_line"),
        (b"GET / HTTP/one", 400, "bad_request_line"),
        (b"GET / HTTP/1.2", 400, "bad_version"),
        (b"GET / HTTP/2.0", 400, "bad_version"),
        (b"GET / HTTP/2", 400, "bad_version"),
        (b"GET / HTTP/0.9", 400, "bad_version"),
        (b"PRI * HTTP/2.0", 400, "bad_version"),
        (b"GET / HTTP/11.11", 400, "bad_version"),
    ],
)
def test_bad_request_lines(line: bytes, status: int, kind: str) -> None:
    err = bad(req(b"Host: x", line=line))
    assert (err.status, err.kind) == (status, kind)


def test_an_http2_preface_is_a_bad_version() -> None:
    assert bad(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").kind == "bad_version"


@pytest.mark.parametrize(
    ("field", "kind"),
    [
        (b"Host : x", "bad_header"),
        (b"Host\t: x", "bad_header"),
        (b": x", "bad_header"),
        (b"No colon here", "bad_header"),
        (b"X(y): 1", "bad_header"),
        (b"X\xc3\xa9: 1", "bad_header"),
        (b"X-A: a\x00b", "bad_header"),
        (b"X-A: a\x7fb", "bad_header"),
        (b"X-A: a\x1bb", "bad_header"),
        (b"Authorization: Basic " + SECRET + b"\x00", "bad_header"),
        (b"X-A: a\rb", "bad_header"),
        (b"X-A: a\nb", "bad_header"),
        (b"X-A: a\n", "bad_header"),
        (b"X-A: a\r", "bad_header"),
        (b"X-A\r: a", "bad_header"),
        (b" X-B: folded", "obs_fold"),
        (b"\tX-B: folded", "obs_fold"),
    ],
)
def test_bad_fields(field: bytes, kind: str) -> None:
    err = bad(req(b"Host: x", field, b"Accept: */*"))
    assert (err.status, err.kind) == (400, kind)


def test_a_continuation_line_is_obs_fold() -> None:
    assert bad(req(b"X-A: a", b"  more")).kind == "obs_fold"
    assert bad(b"GET / HTTP/1.1\r\nX-A: a\r\n\tmore").kind == "obs_fold"  # already, incomplete


def test_bare_lf_line_endings_are_refused_at_once() -> None:
    assert bad(b"GET / HTTP/1.1\nHost: x\n\n").kind == "bad_request_line"
    assert bad(b"GET / HTTP/1.1\r\nHost: x\n\n").kind == "bad_header"
    assert bad(b"GET / HTTP/1.1\r\nHost: x\nAccept: y\r\n\r\n").kind == "bad_header"
    assert bad(b"GET / HTTP/1.1\r\r\n\r\n").kind == "bad_request_line"


@pytest.mark.parametrize(
    ("fields", "status", "kind"),
    [
        ([b"Content-Length: -1"], 400, "bad_content_length"),
        ([b"Content-Length: +1"], 400, "bad_content_length"),
        ([b"Content-Length: 1 2"], 400, "bad_content_length"),
        ([b"Content-Length: 1,1"], 400, "bad_content_length"),
        ([b"Content-Length: 0x10"], 400, "bad_content_length"),
        ([b"Content-Length: 1e3"], 400, "bad_content_length"),
        ([b"Content-Length:"], 400, "bad_content_length"),
        ([b"Content-Length: \xd9\xa3"], 400, "bad_content_length"),  # an Arabic-Indic 3
        ([b"Content-Length: 12345678901234567890"], 400, "bad_content_length"),  # 20 digits
        ([b"Content-Length: 1", b"Content-Length: 1"], 400, "bad_framing"),
        ([b"Content-Length: 1", b"Content-Length: 2"], 400, "bad_framing"),
        ([b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"], 400, "bad_framing"),
        ([b"Transfer-Encoding: chunked", b"Content-Length: 3"], 400, "bad_framing"),
        ([b"Content-Length: 3", b"Transfer-Encoding: chunked"], 400, "bad_framing"),
        ([b"Transfer-Encoding: gzip"], 501, "unsupported_transfer_coding"),
        ([b"Transfer-Encoding: gzip, chunked"], 501, "unsupported_transfer_coding"),
        ([b"Transfer-Encoding: chunked, chunked"], 501, "unsupported_transfer_coding"),
        ([b"Transfer-Encoding: identity"], 501, "unsupported_transfer_coding"),
        ([b"Transfer-Encoding:"], 501, "unsupported_transfer_coding"),
        ([b'Transfer-Encoding: chunked;q="1"'], 501, "unsupported_transfer_coding"),
    ],
)
def test_bad_framing(fields: list[bytes], status: int, kind: str) -> None:
    err = bad(req(b"Host: x", *fields))
    assert (err.status, err.kind) == (status, kind)


@pytest.mark.parametrize("second", [b"Host: attacker.example", b"host: x", b"HOST:"])
def test_a_second_host_is_refused(second: bytes) -> None:
    """RFC 9112 §3.2: a request with more than one Host field gets 400 (which
    authority would it be for?). One Host, in any case, is fine."""
    err = bad(req(b"Host: x", second))
    assert (err.status, err.kind) == (400, "bad_header")
    assert parse_head(req(b"hOsT: x"), L) is not None


def test_transfer_encoding_in_http_1_0_is_refused() -> None:
    err = bad(req(b"Transfer-Encoding: chunked", line=b"POST / HTTP/1.0"))
    assert (err.status, err.kind) == (400, "bad_framing")


# ---- limits


def test_the_request_line_limit() -> None:
    limits = Limits(request_line=40)
    at = b"GET /" + b"a" * 26 + b" HTTP/1.1"
    assert len(at) == 40
    assert parse(req(line=at), limits)[0].target == "/" + "a" * 26
    over = b"GET /" + b"a" * 27 + b" HTTP/1.1"
    err = bad(req(line=over), limits)
    assert (err.status, err.kind) == (414, "line_too_long")
    # incomplete: 414 as soon as no CRLF can come within the limit
    assert parse_head(at, limits) is None
    assert parse_head(at + b"\r", limits) is None
    assert bad(over, limits).status == 414
    assert bad(b"GET /" + b"a" * 100, limits).status == 414
    assert bad(at + b"\r\r", limits).kind == "bad_request_line"


def test_the_default_request_line_limit() -> None:
    at = b"GET /" + b"a" * (8190 - 14) + b" HTTP/1.1"
    assert len(at) == 8190
    assert parse(req(line=at))[0].method == "GET"
    assert bad(req(line=at[:5] + b"a" + at[5:])).status == 414
    assert parse_head(b"GET /" + b"a" * (8190 - 5) + b"\r", L) is None
    assert bad(b"GET /" + b"a" * (8190 - 4)).status == 414


def test_the_field_limit() -> None:
    limits = Limits(field=20)
    at = b"X-A: " + b"v" * 17  # 3 + 17
    assert parse(req(at), limits)[0].raw_headers == ((b"X-A", b"v" * 17),)
    assert parse(req(b"X-A:  \t" + b"v" * 17 + b" \t "), limits)  # the OWS is not counted
    err = bad(req(at + b"v"), limits)
    assert (err.status, err.kind) == (431, "header_too_large")
    # incomplete: 431 as soon as the field is over, whether or not its name has ended
    assert parse_head(b"GET / HTTP/1.1\r\n" + at, limits) is None
    assert bad(b"GET / HTTP/1.1\r\n" + at + b"v", limits).status == 431
    assert bad(b"GET / HTTP/1.1\r\n" + b"X" * 21, limits).status == 431
    assert parse_head(b"GET / HTTP/1.1\r\n" + b"X" * 20, limits) is None
    # a field line padded with a lot of whitespace is over too
    assert bad(req(b"X-A: " + b" " * 300 + b"v"), limits).kind == "header_too_large"
    assert bad(b"GET / HTTP/1.1\r\nX-A:" + b" " * 300, limits).kind == "header_too_large"


def test_the_default_field_limit() -> None:
    at = b"Authorization: " + b"t" * (8190 - 13)
    assert parse(req(at))[0].raw_headers[0][1] == b"t" * (8190 - 13)
    assert bad(req(at + b"t")).status == 431


def test_the_field_count_limit() -> None:
    limits = Limits(fields=3)
    fields = [b"X-%d: v" % i for i in range(4)]
    assert len(parse(req(*fields[:3]), limits)[0].raw_headers) == 3
    err = bad(req(*fields), limits)
    assert (err.status, err.kind) == (431, "too_many_headers")
    three = b"GET / HTTP/1.1\r\n" + b"".join(f + b"\r\n" for f in fields[:3])
    assert parse_head(three + b"\r", limits) is None  # maybe the blank line
    assert bad(three + b"X", limits).kind == "too_many_headers"  # at once


def test_the_default_field_count_limit() -> None:
    fields = [b"X-%d: v" % i for i in range(101)]
    assert len(parse(req(*fields[:100]))[0].raw_headers) == 100
    assert bad(req(*fields)).kind == "too_many_headers"


def test_a_growing_head_never_buffers_more_than_the_limits() -> None:
    limits = Limits(request_line=100, field=50, fields=5)
    most = 100 + 4 + 5 * (50 + 1 + 256 + 2)
    for line in (b"X-A: v\r\n", b"X-A:" + b" " * 100 + b"\r\n"):
        buf = bytearray(b"GET / HTTP/1.1\r\n")
        with pytest.raises(BadRequest) as info:
            while True:
                buf += line
                assert parse_head(buf, limits) is None
        assert info.value.status == 431 and len(buf) <= most + len(line)


# ---- incremental


def test_every_prefix_of_a_head_is_incomplete() -> None:
    for raw in (EAS_HEAD, b"\r\n\r\n" + req(b"A:", b"B: c\t")):
        for i in range(len(raw)):
            assert parse_head(raw[:i], L) is None, i
            assert parse_head(bytearray(raw[:i]), L) is None, i


def test_a_head_dripped_a_byte_at_a_time_is_the_same() -> None:
    head, end = parse(EAS_HEAD + b"body")
    dripped, dripped_end = drip(EAS_HEAD + b"body")
    assert summary(dripped) == summary(head) and dripped_end == end == len(EAS_HEAD)


def test_pipelined_heads() -> None:
    second = req(b"Host: x", line=b"GET /next HTTP/1.1")
    buf = EAS_HEAD + b"0123456789abc" + second + b"GET /third HT"
    head, end = parse(buf)
    assert end == len(EAS_HEAD) and head.content_length == 13
    head2, end2 = parse(buf, start=end + 13)
    assert head2.target == "/next" and end2 == len(EAS_HEAD) + 13 + len(second)
    assert parse_head(buf, L, end2) is None


# ---- chunked bodies


def decode(*pieces: bytes) -> tuple[bytes, int, ChunkedDecoder]:
    d = ChunkedDecoder()
    out, used = [], 0
    for piece in pieces:
        got, n = d.feed(piece)
        out += got
        used += n
    return b"".join(out), used, d


CHUNKED = b"4\r\nWiki\r\n5;name=value;flag\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\n\r\n"


def test_a_chunked_body_whole() -> None:
    body, used, d = decode(CHUNKED)
    assert body == b"Wikipedia in\r\n\r\nchunks." and used == len(CHUNKED) and d.done


def test_a_chunked_body_byte_by_byte() -> None:
    body, used, d = decode(*(CHUNKED[i : i + 1] for i in range(len(CHUNKED))))
    assert body == b"Wikipedia in\r\n\r\nchunks." and used == len(CHUNKED) and d.done


def test_extensions_and_trailers_are_read_and_dropped() -> None:
    raw = (
        b'a ;ext="quoted \\" value"; e2 = v2\t;x\r\n0123456789\r\n'
        b"0;last\r\nX-Trailer: t\r\nX-Other:\t\xff\r\n\r\n"
    )
    for pieces in ([raw], [raw[i : i + 1] for i in range(len(raw))]):
        body, used, d = decode(*pieces)
        assert body == b"0123456789" and used == len(raw) and d.done


def test_the_decoder_stops_at_the_end_of_the_body() -> None:
    nxt = b"GET / HTTP/1.1\r\n\r\n"
    d = ChunkedDecoder()
    pieces, used = d.feed(CHUNKED + nxt)
    assert used == len(CHUNKED) and d.done and b"".join(pieces).endswith(b"chunks.")
    assert d.feed(nxt) == ([], 0)
    d = ChunkedDecoder()  # the same, a byte at a time
    total = 0
    for b in CHUNKED + nxt:
        total += d.feed(bytes([b]))[1]
    assert total == len(CHUNKED) and d.done


def test_data_comes_back_as_it_arrives() -> None:
    d = ChunkedDecoder()
    assert d.feed(b"10\r\nabc") == ([b"abc"], 7)
    assert d.feed(bytearray(b"def")) == ([b"def"], 3)
    assert d.feed(memoryview(b"xxghijklmnop\r\n0\r\n\r\n")[2:]) == ([b"ghijklmnop"], 17)
    assert d.done


def test_a_bytearray_fed_can_be_resized_after() -> None:
    buf = bytearray(b"3\r\nabc\r\n")
    d = ChunkedDecoder()
    assert d.feed(buf) == ([b"abc"], 8)
    del buf[:8]  # no view of it is left behind
    buf += b"2\r\nxyz"
    with pytest.raises(BadRequest):
        d.feed(buf)
    del buf[:2]  # nor after an error


@pytest.mark.parametrize(
    "raw",
    [
        b"x\r\n",
        b"\r\n",
        b" 1\r\na\r\n",
        b"1 \r\na\r\n",
        b"-1\r\n",
        b"0x1\r\n",
        b"1" * 17 + b"\r\n",
        b"1\na\r\n",
        b"1\r\na\n",
        b"1\r\nabc",
        b"1\r\na\r\r",
        b"1;e=\x00\r\na\r\n",
        b"1;e=\x7f\r\na\r\n",
        b"1;" + SECRET + b"\rx\r\na\r\n",
        b"0\r\nno colon\r\n\r\n",
        b"0\r\n folded: x\r\n\r\n",
        b"0\r\nX: a\x00b\r\n\r\n",
        b"0\r\nX-T: t\n\r\n",
        b"0\r\nBad Name: t\r\n\r\n",
        b"1\r\na\r\n0\r\n\n",
        b"1;" + b"e" * 4095 + b"\r\na\r\n",
        b"0\r\nX-T: " + b"t" * 4092 + b"\r\n\r\n",
        b"0\r\n" + b"X: t\r\n" * 65 + b"\r\n",
    ],
)
def test_bad_chunked_bodies(raw: bytes) -> None:
    for pieces in ([raw], [raw[i : i + 1] for i in range(len(raw))]):
        with pytest.raises(BadRequest) as info:
            decode(*pieces)
        err = info.value
        assert (err.status, err.kind) == (400, "bad_chunk") and SECRET.decode() not in str(err)


def test_chunk_line_limits_at_the_limit_pass() -> None:
    size_line = b"1;" + b"e" * 4094  # 4096 bytes
    trailer = b"X-T: " + b"t" * 4091  # 4096 bytes
    raw = size_line + b"\r\na\r\n0\r\n" + trailer + b"\r\n" + b"X: t\r\n" * 63 + b"\r\n"
    for pieces in ([raw], [raw[i : i + 1] for i in range(len(raw))]):
        body, used, d = decode(*pieces)
        assert body == b"a" and d.done and used == len(raw)
    body, _, d = decode(b"ffffffffffffffff\r\nabc")  # 16 hex digits
    assert body == b"abc" and not d.done


def test_a_long_chunk_line_is_refused_before_it_ends() -> None:
    d = ChunkedDecoder()
    d.feed(b"1;" + b"e" * 4094)
    d.feed(b"\r")  # 4096 bytes and a CR: may yet end
    with pytest.raises(BadRequest):
        ChunkedDecoder().feed(b"1;" + b"e" * 4095)  # 4097 bytes, no CR: cannot
    with pytest.raises(BadRequest):
        ChunkedDecoder().feed(b"1;" + b"e" * 5000)


# ---- any bytes

_HEAD_PIECES = [
    b"GET / HTTP/1.1\r\n", b"POST /x?y HTTP/1.0\r\n", b"\r\n", b"\r", b"\n", b" ", b"\t",
    b"Content-Length: 3\r\n", b"Transfer-Encoding: chunked\r\n", b"Connection: close\r\n",
    b"X-A: b\r\n", b":", b"HTTP/2.0", b"\x00", b"\xff",
]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    data=st.lists(st.one_of(st.binary(max_size=24), st.sampled_from(_HEAD_PIECES)), max_size=12),
    start=st.integers(0, 8),
)
def test_any_bytes_are_a_head_none_or_bad_request(data: list[bytes], start: int) -> None:
    buf = b"".join(data)
    limits = Limits(request_line=64, field=32, fields=4)
    try:
        got = parse_head(buf, limits, start)
    except BadRequest as err:
        assert err.kind in KINDS and err.status == STATUS.get(err.kind, 400)
        return
    if got is not None:
        head, end = got
        assert start < end <= len(buf) and buf[end - 4 : end] == b"\r\n\r\n"
        assert len(head.raw_headers) <= 4
        assert parse_head(buf[:end], limits, start) is not None
    else:
        assert len(buf) - start < 64 + 4 + 4 * (32 + 1 + 256 + 2) + 8
        end = len(buf)
    # what was not wrong whole was not wrong in part, nor complete
    for i in range(start, end):
        assert parse_head(buf[:i], limits, start) is None


_CHUNK_PIECES = [b"\r\n", b"0\r\n", b"1\r\n", b"a;x=y\r\n", b"X: y\r\n", b";", b"\r", b"\n", b"z"]


@settings(max_examples=400, deadline=None)
@given(
    data=st.lists(st.one_of(st.binary(max_size=24), st.sampled_from(_CHUNK_PIECES)), max_size=16)
)
def test_any_bytes_are_a_chunked_body_or_bad_request(data: list[bytes]) -> None:
    d = ChunkedDecoder()
    try:
        for piece in data:
            got, used = d.feed(piece)
            assert 0 <= used <= len(piece) and sum(map(len, got)) <= used
            if d.done:
                assert d.feed(piece) == ([], 0)
    except BadRequest as err:
        assert (err.status, err.kind) == (400, "bad_chunk")


_EXT = st.sampled_from([b"", b";a", b";a=b", b' ; n="v;\\"x"', b";k=v;k2"])


@settings(max_examples=200, deadline=None)
@given(
    chunks=st.lists(st.tuples(st.binary(min_size=1, max_size=40), _EXT), max_size=8),
    trailers=st.lists(st.sampled_from([b"X-T: 1", b"Y:", b"Z:\tz z "]), max_size=3),
    cuts=st.lists(st.integers(0, 500), max_size=8),
    upper=st.booleans(),
)
def test_a_valid_chunked_body_split_anywhere_decodes(
    chunks: list[tuple[bytes, bytes]], trailers: list[bytes], cuts: list[int], upper: bool
) -> None:
    out = []
    for data, ext in chunks:
        size = b"%X" % len(data) if upper else b"%x" % len(data)
        out.append(size + ext + b"\r\n" + data + b"\r\n")
    out.append(b"0\r\n" + b"".join(t + b"\r\n" for t in trailers) + b"\r\n")
    raw = b"".join(out)
    stream = raw + b"GET / HTTP/1.1\r\n"
    points = sorted({min(c, len(stream)) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    body, used, d = decode(*pieces)
    assert d.done and used == len(raw) and body == b"".join(data for data, _ in chunks)


_TCHARS = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_VCHARS = bytes(range(0x21, 0x7F)) + bytes(range(0x80, 0x100))


def _from(alphabet: bytes, min_size: int, max_size: int) -> st.SearchStrategy[bytes]:
    return st.lists(st.sampled_from(alphabet), min_size=min_size, max_size=max_size).map(bytes)


_NAME = _from(_TCHARS, 1, 12).filter(
    lambda n: n.lower() not in (b"content-length", b"transfer-encoding")
)
_VALUE = _from(_VCHARS + b" \t", 0, 20)
_OWS = _from(b" \t", 0, 3)


@settings(max_examples=200, deadline=None)
@given(
    method=_from(_TCHARS, 1, 8),
    target=_from(_VCHARS, 1, 30),
    minor=st.sampled_from([0, 1]),
    fields=st.lists(st.tuples(_NAME, _OWS, _VALUE, _OWS), max_size=8),
    cut=st.integers(0, 10_000),
)
def test_a_valid_head_round_trips(
    method: bytes,
    target: bytes,
    minor: int,
    fields: list[tuple[bytes, bytes, bytes, bytes]],
    cut: int,
) -> None:
    lines = [method + b" " + target + b" HTTP/1.%d" % minor]
    lines += [name + b":" + ows1 + value + ows2 for name, ows1, value, ows2 in fields]
    raw = b"\r\n".join(lines) + b"\r\n\r\n"
    head, end = parse(raw + b"next")
    assert end == len(raw)
    assert head.method == method.decode() and head.version == (1, minor)
    assert head.target.encode("utf-8", "surrogateescape") == target
    assert head.raw_headers == tuple((name, value.strip(b" \t")) for name, _, value, _ in fields)
    assert parse_head(raw[: cut % len(raw)], L) is None
