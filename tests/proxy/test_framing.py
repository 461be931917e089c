"""framing.py: the pure checks (head, content coding, upstream framing)."""

from __future__ import annotations

import gzip
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from sentry.proxy import framing as framing_module
from sentry.proxy.errors import (
    FramingError,
    HeaderTooLarge,
    RequestLineTooLong,
    RequestTooLarge,
    UnsupportedContentCoding,
    UnsupportedTransferCoding,
)
from sentry.proxy.forward import BodyStream
from sentry.proxy.framing import Framing, check_head, decoded_for_inspection, frame_upstream
from sentry.settings import HeaderLimitSettings

LIMITS = HeaderLimitSettings(request_line_bytes=100, field_bytes=300, fields=10)
H11 = (1, 1)


def head(*headers: tuple[bytes, bytes], method: str = "POST", version=H11) -> Framing:
    return check_head(method, b"/x", version, headers, LIMITS)


def test_plain_framings() -> None:
    assert head() == Framing(None, False, None)
    assert head((b"Content-Length", b"12")) == Framing(12, False, None)
    assert head((b"transfer-encoding", b"Chunked")) == Framing(None, True, None)
    assert head((b"Content-Encoding", b"GZIP")).content_encoding == "gzip"
    assert not head((b"Content-Length", b"0"), method="OPTIONS").has_body


@pytest.mark.parametrize(
    ("headers", "version", "method", "error"),
    [
        (
            ((b"Content-Length", b"1"), (b"Transfer-Encoding", b"chunked")),
            H11,
            "POST",
            FramingError,
        ),
        (((b"Content-Length", b"1"), (b"content-length", b"1")), H11, "POST", FramingError),
        (
            ((b"Content-Encoding", b"gzip"), (b"Content-Encoding", b"gzip")),
            H11,
            "POST",
            FramingError,
        ),
        (((b"Transfer-Encoding", b"chunked"),), (1, 0), "POST", FramingError),
        (((b"Transfer-Encoding", b"gzip, chunked"),), H11, "POST", UnsupportedTransferCoding),
        (((b"Content-Length", b"-1"),), H11, "POST", FramingError),
        (((b"Content-Length", b"3"),), H11, "OPTIONS", FramingError),
        (((b"Transfer-Encoding", b"chunked"),), H11, "OPTIONS", FramingError),
    ],
)
def test_ambiguous_or_unsupported_framing(headers, version, method, error) -> None:
    with pytest.raises(error) as caught:
        head(*headers, method=method, version=version)
    assert caught.type is error  # not a subclass: each case has its own status


def test_head_limits_are_exact_at_the_boundary() -> None:
    line = 100 - len("POST  HTTP/1.1")
    assert check_head("POST", b"/" * line, H11, (), LIMITS)
    with pytest.raises(RequestLineTooLong):
        check_head("POST", b"/" * (line + 1), H11, (), LIMITS)
    name = b"Authorization"
    assert head((name, b"x" * (300 - len(name))))
    with pytest.raises(HeaderTooLarge):
        head((name, b"x" * (301 - len(name))))
    assert head(*[(b"X-%d" % i, b"v") for i in range(10)])
    with pytest.raises(HeaderTooLarge):
        head(*[(b"X-%d" % i, b"v") for i in range(11)])


def test_statuses_and_texts_of_the_errors() -> None:
    assert (FramingError.http_status, RequestLineTooLong.http_status) == (400, 414)
    assert (HeaderTooLarge.http_status, UnsupportedContentCoding.http_status) == (431, 415)
    assert UnsupportedTransferCoding.http_status == 501
    for cls in (FramingError, RequestLineTooLong, HeaderTooLarge):
        assert cls.public_text and "\n" not in cls.public_text


@given(st.binary(max_size=2000))
def test_gzip_and_deflate_decode_exactly_what_was_compressed(body: bytes) -> None:
    assert decoded_for_inspection(gzip.compress(body), "gzip", 4096) == body
    assert decoded_for_inspection(zlib.compress(body), "deflate", 4096) == body
    assert decoded_for_inspection(body, None, 4096) == body
    assert decoded_for_inspection(body, "identity", 4096) == body


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (gzip.compress(b"abc") + gzip.compress(b"evil"), FramingError),  # a second member
        (gzip.compress(b"abc") + b"\x00", FramingError),
        (gzip.compress(b"abc")[:-3], FramingError),
        (b"\x1f\x8bnot really", FramingError),
        (gzip.compress(b"\x00" * 10_000), RequestTooLarge),  # a small bomb against a 4 KiB limit
    ],
)
def test_bad_compressed_bodies(body: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        decoded_for_inspection(body, "gzip", 4096)


def test_unknown_coding_is_415() -> None:
    with pytest.raises(UnsupportedContentCoding):
        decoded_for_inspection(b"x", "br", 4096)


def test_frame_upstream_sets_the_length_of_what_is_sent() -> None:
    h = CIMultiDict({"Content-Length": "999", "Transfer-Encoding": "chunked", "X": "1"})
    assert frame_upstream(h, b"abc") == b"abc"
    assert h.getall("Content-Length") == ["3"] and "Transfer-Encoding" not in h
    h = CIMultiDict({"Content-Length": "5"})
    assert frame_upstream(h, b"") == b"" and h.getall("Content-Length") == ["0"]
    stream = BodyStream(b"", None, 100, expected=7)
    assert frame_upstream(h, stream) is stream and h["Content-Length"] == "7"
    h = CIMultiDict({"Content-Length": "5"})
    frame_upstream(h, BodyStream(b"", None, 100))
    assert "Content-Length" not in h  # sent chunked


async def test_a_stream_shorter_than_declared_fails_instead_of_desynchronising() -> None:
    stream = BodyStream(b"abc", None, 100, expected=5)
    with pytest.raises(ConnectionResetError):
        async for _ in stream:
            pass


def _two_passes(method, target, version, raw_headers, limits):
    """check_head as it was written before its one pass: every size first,
    then the framing fields gathered in a dict (the reference)."""
    line, line_max = len(method) + 1 + len(target) + 1 + len("HTTP/1.1"), limits.request_line_bytes
    if line > line_max:
        raise RequestLineTooLong(f"request line of {line} bytes (limit {line_max})")
    if len(raw_headers) > limits.fields:
        raise HeaderTooLarge(f"{len(raw_headers)} header fields (limit {limits.fields})")
    for name, value in raw_headers:
        size = len(name) + len(value)
        if size > limits.field_bytes:
            shown = name[:64].decode("latin-1")
            raise HeaderTooLarge(f"header {shown} of {size} bytes (limit {limits.field_bytes})")
    seen: dict[bytes, list[bytes]] = {}
    for name, value in raw_headers:
        if name.lower() in (b"content-length", b"transfer-encoding", b"content-encoding"):
            seen.setdefault(name.lower(), []).append(value)
    for name, values in seen.items():
        if len(values) > 1:
            raise FramingError(f"repeated {name.decode()} header")
    te = seen.get(b"transfer-encoding", [None])[0]
    cl = seen.get(b"content-length", [None])[0]
    ce = seen.get(b"content-encoding", [None])[0]
    coding = None if ce is None else ce.decode("latin-1").strip().lower()
    framing = Framing(framing_module._length(cl), framing_module._chunked(te, cl, version), coding)
    if method == "OPTIONS" and framing.has_body:
        raise FramingError(f"{method} carries no body")
    return framing


_NAMES = st.sampled_from(
    [
        b"Content-Length",
        b"content-length",
        b"Transfer-Encoding",
        b"TRANSFER-ENCODING",
        b"Content-Encoding",
        b"Content-Lengtx",  # a framing name's length, not its name
        b"Content-Encodinx",
        b"Host",
        b"X-Long",
    ]
)
_VALUES = st.sampled_from([b"", b"0", b"12", b"chunked", b"gzip", b"x" * 290, b"-1"])


@given(
    st.lists(st.tuples(_NAMES, _VALUES), max_size=12),
    st.sampled_from(["POST", "OPTIONS"]),
    st.sampled_from([H11, (1, 0)]),
)
def test_one_pass_answers_as_two_passes(headers, method, version) -> None:
    """The one pass of check_head raises the error the two passes raised
    (sizes before repeats, repeats named in the order the fields came) and
    returns the same framing otherwise."""

    def outcome(check):
        try:
            return check(method, b"/x", version, tuple(headers), LIMITS)
        except FramingError as exc:
            return type(exc), str(exc)

    assert outcome(check_head) == outcome(_two_passes)
