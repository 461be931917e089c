"""The strict recording backend: requests cut by the announced length only."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentry.testing.raw_client import RawConnection, request_bytes
from sentry.testing.recording_backend import (
    FramingViolation,
    RecordedRequest,
    StrictParser,
    start_recording_backend,
)

TOKENS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12)
REQUESTS = st.lists(
    st.tuples(
        st.sampled_from(["POST", "OPTIONS", "PUT"]),
        st.text(alphabet="abcXYZ019/?=&", min_size=0, max_size=20),
        st.lists(st.tuples(TOKENS, st.text(alphabet="abc 123;=", max_size=20)), max_size=4),
        st.binary(max_size=200),
        st.booleans(),
    ),
    min_size=1,
    max_size=5,
)


def encode_request(
    method: str, path: str, headers: list[tuple[str, str]], body: bytes, chunked: bool
) -> bytes:
    headers = [
        (k, v.strip())
        for k, v in headers
        if k not in ("content-length", "transfer-encoding", "content-encoding", "host")
    ]
    if chunked:
        framed = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (body[:7], body[7:]) if c)
        return request_bytes(
            method, "/" + path, [*headers, ("Transfer-Encoding", "chunked")], framed + b"0\r\n\r\n"
        )
    return request_bytes(method, "/" + path, [*headers, ("Content-Length", str(len(body)))], body)


@given(REQUESTS, st.lists(st.integers(1, 50), max_size=30))
def test_any_well_framed_stream_is_cut_back_into_its_requests(requests, cuts) -> None:
    stream = b"".join(encode_request(*r) for r in requests)
    parser = StrictParser()
    got: list[RecordedRequest] = []
    pos = 0
    for size in [*cuts, len(stream)]:
        events = parser.feed(stream[pos : pos + size])
        got += [v for k, v in events if k == "request"]
        pos += size
    assert [(r.method, r.body) for r in got] == [(m, b) for m, _, _, b, _ in requests]
    assert b"".join(r.raw for r in got) == stream


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"POST / HTTP/1.1\nHost: a\n\n", "bare LF"),
        (b"POST / HTTP/1.1\r\nHost: a\r\nX: 1\x00\r\n\r\n", "NUL"),
        (b"POST / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n", "obs-fold"),
        (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", "duplicate"),
        (b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", "both"),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", "HTTP/1.0"),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", "transfer coding"),
        (b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", "Content-Length"),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
    ],
)
def test_framing_violations_are_named(data: bytes, problem: str) -> None:
    with pytest.raises(FramingViolation, match=problem):
        StrictParser().feed(data)


async def test_the_server_records_every_byte_and_answers_options_early() -> None:
    async with await start_recording_backend() as backend:
        conn = await RawConnection.open(backend.url)
        await conn.send(request_bytes("OPTIONS", "/x", [("Content-Length", "4")]))
        assert (await conn.response()).status == 200  # answered before the body
        await conn.send(b"body" + request_bytes("POST", "/y", [], b"abc"))
        assert (await conn.response()).status == 200
        await backend.wait_for(lambda: len(backend.requests) == 2)
        assert [(r.method, r.body) for r in backend.requests] == [
            ("OPTIONS", b"body"),
            ("POST", b"abc"),
        ]
        await conn.send(b"POST / HTTP/1.1\nHost: x\n\n")
        assert (await conn.response()).status == 400
        assert await conn.closed_by_peer()
        assert backend.violations == ["bare LF or CR in the head"]
        assert bytes(backend.connections[0].raw).endswith(b"Host: x\n\n")
        await conn.close()
