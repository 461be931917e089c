"""Exact framing to the backend, proved against a strict recording backend.

Every test sends raw bytes to a real gateway (plain HTTP, so the bytes are
exactly what the test wrote) in front of ``RecordingBackend``, which cuts its
byte stream into requests by the announced length only and records every
byte. "Nothing smuggled" is then a statement about that record: no framing
violation, and exactly the requests the gateway decided to forward.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sentry.eas.wbxml import encode
from sentry.eas.xmlform import from_xml
from sentry.testing.eas_client import basic_auth
from sentry.testing.gateway import DemoGateway, PoolSpec, demo_gateway
from sentry.testing.logs import captured_log_output
from sentry.testing.raw_client import RawConnection, request_bytes
from sentry.testing.recording_backend import RecordingBackend, start_recording_backend

EAS = "/Microsoft-Server-ActiveSync"
WBXML = "application/vnd.ms-sync.wbxml"


def query(cmd: str, user: str = "alice", device: str = "FRAME0001") -> str:
    return f"{EAS}?Cmd={cmd}&User={user}&DeviceId={device}&DeviceType=iPhone"


def eas_headers(user: str = "alice") -> list[tuple[str, str]]:
    return [
        ("Authorization", basic_auth(user, "secret")),
        ("MS-ASProtocolVersion", "14.1"),
        ("Content-Type", WBXML),
    ]


FOLDERSYNC = encode(
    from_xml('<FolderSync xmlns="FolderHierarchy"><SyncKey>0</SyncKey></FolderSync>')
)


@pytest.fixture
async def backend() -> AsyncIterator[RecordingBackend]:
    async with await start_recording_backend() as b:
        yield b


@pytest.fixture
async def gw(tmp_path: Path, backend: RecordingBackend) -> AsyncIterator[DemoGateway]:
    pools = {"exchange": PoolSpec("exchange", extra={"servers": [backend.url]})}
    async with demo_gateway(tmp_path, pools, gateway={"tls": {"enabled": False}}) as g:
        yield g


async def exchange(gw: DemoGateway, data: bytes, answers: int = 1) -> list[int]:
    async with await RawConnection.open(gw.url) as conn:
        await conn.send(data)
        return [r.status for r in await conn.responses(answers)]


def forwarded(backend: RecordingBackend) -> list[str]:
    return [f"{r.method} {r.target}" for r in backend.eas_requests()]


@pytest.mark.parametrize("size", [40 * 1024, 300 * 1024])
async def test_bodies_read_whole_or_streamed_over_tls_arrive_byte_for_byte(
    tmp_path: Path, backend: RecordingBackend, size: int
) -> None:
    """Over TLS the gateway reads the device's bytes 2 KiB at a time
    (``listeners.TLS_READ_BUFFER``): a body under 64 KiB is read whole and
    sent with the head, a larger one is streamed; both arrive intact."""
    body = bytes(range(256)) * (size // 256)
    pools = {"exchange": PoolSpec("exchange", extra={"servers": [backend.url]})}
    async with demo_gateway(tmp_path, pools) as tls_gw:
        assert tls_gw.url.startswith("https://")
        data = request_bytes("POST", query("FolderSync"), eas_headers(), body)
        assert await exchange(tls_gw, data) == [200]
        await backend.wait_for(lambda: len(backend.eas_requests()) == 1)
    (got,) = backend.eas_requests()
    assert got.body == body and got.header("Content-Length") == str(size)
    assert backend.violations == []


async def test_options_with_a_body_cannot_smuggle_a_request(
    gw: DemoGateway, backend: RecordingBackend
) -> None:
    """The attack of issue 10: an OPTIONS whose Content-Length the gateway
    used to copy without the body, so a backend reading by that length ate the
    head of the next forwarded request and took its body as a new request."""
    smuggled = request_bytes("POST", query("FolderSync", "mallory", "SMUGGLED01"), [], b"")
    post = request_bytes("POST", query("FolderSync"), eas_headers(), smuggled)
    assert await exchange(gw, post) == [200]  # learn the forwarded head's length
    await backend.wait_for(lambda: len(backend.eas_requests()) == 1)
    head = len(backend.eas_requests()[0].raw) - len(smuggled)

    options = request_bytes("OPTIONS", f"{EAS}?User=alice", [], b"x" * head)
    statuses = await exchange(gw, options)
    statuses += await exchange(gw, post)

    assert not any("SMUGGLED01" in r.target for r in backend.requests)
    assert backend.violations == []
    assert statuses == [400, 200]
    await backend.wait_for(lambda: len(backend.eas_requests()) == 2)
    assert forwarded(backend) == [f"POST {query('FolderSync')}"] * 2


async def test_options_with_a_body_is_refused_and_never_forwarded(
    gw: DemoGateway, backend: RecordingBackend
) -> None:
    data = request_bytes("OPTIONS", f"{EAS}?User=alice", [], b"hello")
    data += request_bytes("OPTIONS", f"{EAS}?User=alice", [("Transfer-Encoding", "chunked")])
    assert await exchange(gw, data[: data.index(b"hello") + 5]) == [400]
    chunked = request_bytes(
        "OPTIONS", f"{EAS}?User=alice", [("Transfer-Encoding", "chunked")], b"0\r\n\r\n"
    )
    assert await exchange(gw, chunked) == [400]
    assert forwarded(backend) == []


async def test_options_without_a_body_is_forwarded_with_an_empty_body(
    gw: DemoGateway, backend: RecordingBackend
) -> None:
    for framing in ([("Content-Length", "0")], []):
        data = request_bytes("OPTIONS", f"{EAS}?User=alice", framing)
        assert await exchange(gw, data) == [200]
    await backend.wait_for(lambda: len(backend.eas_requests()) == 2)
    for req in backend.eas_requests():
        assert req.header("Transfer-Encoding") is None and req.header_count("Content-Length") == 1
        assert (req.header("Content-Length"), req.body) == ("0", b"")


async def test_forwarded_length_is_the_length_of_the_forwarded_body(
    gw: DemoGateway, backend: RecordingBackend
) -> None:
    body = b"\x03\x01j\x00" + b"z" * 300  # not inspected (FolderSync): read whole, sent as is
    data = request_bytes("POST", query("FolderSync"), eas_headers(), body)
    data += request_bytes("POST", query("FolderSync"), eas_headers(), b"")
    assert await exchange(gw, data, answers=2) == [200, 200]
    await backend.wait_for(lambda: len(backend.eas_requests()) == 2)
    first, second = backend.eas_requests()
    assert (first.body, first.header_count("Content-Length")) == (body, 1)
    assert first.header("Content-Length") == str(len(body))
    assert (second.body, second.header("Content-Length")) == (b"", "0")
    assert backend.violations == []


async def test_chunked_request_is_forwarded_chunked_with_the_same_bytes(
    gw: DemoGateway, backend: RecordingBackend
) -> None:
    chunks = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    headers = [*eas_headers(), ("Transfer-Encoding", "chunked")]
    assert await exchange(gw, request_bytes("POST", query("FolderSync"), headers, chunks)) == [200]
    await backend.wait_for(lambda: len(backend.eas_requests()) == 1)
    (req,) = backend.eas_requests()
    assert req.body == b"hello world"
    assert req.header("Content-Length") is None
    assert backend.violations == []


async def test_gzip_body_is_forwarded_as_the_raw_compressed_bytes(
    gw: DemoGateway, backend: RecordingBackend
) -> None:
    raw = gzip.compress(FOLDERSYNC * 50)
    headers = [*eas_headers(), ("Content-Encoding", "gzip")]
    assert await exchange(gw, request_bytes("POST", query("FolderSync"), headers, raw)) == [200]
    await backend.wait_for(lambda: len(backend.eas_requests()) == 1)
    (req,) = backend.eas_requests()
    assert req.body == raw
    assert req.header("Content-Encoding") == "gzip"
    assert req.header("Content-Length") == str(len(raw))


async def test_gzip_body_of_an_inspected_command_is_inspected_and_forwarded_raw(
    gw: DemoGateway, backend: RecordingBackend
) -> None:
    ping = encode(
        from_xml(
            '<Ping xmlns="Ping"><HeartbeatInterval>60</HeartbeatInterval><Folders><Folder>'
            "<Id>1</Id><Class>Email</Class></Folder></Folders></Ping>"
        )
    )
    for coding, raw in (("gzip", gzip.compress(ping)), ("deflate", zlib.compress(ping))):
        headers = [*eas_headers(), ("Content-Encoding", coding)]
        data = request_bytes("POST", query("Ping", device=f"GZ{coding}"), headers, raw)
        assert await exchange(gw, data) == [200]
        await backend.wait_for(lambda raw=raw: any(r.body == raw for r in backend.requests))
    assert backend.violations == []


@pytest.mark.parametrize(
    ("coding", "body", "status"),
    [
        ("gzip", gzip.compress(b"\x03\x01j\x00") + b"trailing", 400),  # data after the member
        ("gzip", gzip.compress(b"\x03\x01j\x00")[:-4], 400),  # truncated
        ("gzip", b"not gzip at all", 400),
        ("br", b"\x0b\x02\x80", 415),  # a coding the gateway cannot inspect
    ],
)
async def test_unreadable_encoded_body_of_an_inspected_command_is_refused(
    gw: DemoGateway, backend: RecordingBackend, coding: str, body: bytes, status: int
) -> None:
    headers = [*eas_headers(), ("Content-Encoding", coding)]
    assert await exchange(gw, request_bytes("POST", query("Ping"), headers, body)) == [status]
    assert forwarded(backend) == []


TE_CL = [("Content-Length", "5"), ("Transfer-Encoding", "chunked")]
FRAMING_ATTACKS = {
    "te_and_cl": (TE_CL, b"0\r\n\r\n", "HTTP/1.1"),
    "cl_and_te": (TE_CL[::-1], b"0\r\n\r\n", "HTTP/1.1"),
    "duplicate_cl": ([("Content-Length", "5"), ("Content-Length", "5")], b"hello", "HTTP/1.1"),
    "duplicate_cl_list": ([("Content-Length", "5, 5")], b"hello", "HTTP/1.1"),
    "duplicate_te": (
        [("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked")],
        b"0\r\n\r\n",
        "HTTP/1.1",
    ),
    "duplicate_content_encoding": (
        [("Content-Encoding", "gzip"), ("Content-Encoding", "identity")],
        b"",
        "HTTP/1.1",
    ),
    "te_on_http10": ([("Transfer-Encoding", "chunked")], b"5\r\nhello\r\n0\r\n\r\n", "HTTP/1.0"),
    "te_gzip_chunked": ([("Transfer-Encoding", "gzip, chunked")], b"0\r\n\r\n", "HTTP/1.1"),
    "te_identity": ([("Transfer-Encoding", "identity")], b"", "HTTP/1.1"),
    "cl_plus": ([("Content-Length", "+5")], b"hello", "HTTP/1.1"),
    "cl_space_before_colon": ([("Content-Length ", "5")], b"hello", "HTTP/1.1"),
}


@pytest.mark.parametrize("case", sorted(FRAMING_ATTACKS))
async def test_ambiguous_framing_is_refused_and_never_forwarded(
    gw: DemoGateway, backend: RecordingBackend, case: str
) -> None:
    extra, body, version = FRAMING_ATTACKS[case]
    head = request_bytes("POST", query("FolderSync"), [*eas_headers(), *extra], version=version)
    smuggled = request_bytes("POST", query("FolderSync", "mallory", "SMUGGLED02"), [], b"")
    statuses = await exchange(gw, head + body + smuggled)
    assert statuses[0] in (400, 501)
    assert forwarded(backend) == []
    assert backend.violations == []


async def test_obs_fold_is_refused(gw: DemoGateway, backend: RecordingBackend) -> None:
    data = request_bytes("POST", query("FolderSync"), [*eas_headers(), ("X-A", "one\r\n two")])
    assert await exchange(gw, data) == [400]
    assert forwarded(backend) == []


async def test_expect_continue_is_answered_by_the_gateway_not_forwarded(
    gw: DemoGateway, backend: RecordingBackend
) -> None:
    headers = [*eas_headers(), ("Expect", "100-continue")]
    async with await RawConnection.open(gw.url) as conn:
        await conn.send(request_bytes("POST", query("FolderSync"), headers, FOLDERSYNC))
        statuses = [(await conn.response()).status]
        while statuses[-1] < 200:
            statuses.append((await conn.response()).status)
    assert statuses[-1] == 200
    await backend.wait_for(lambda: len(backend.eas_requests()) == 1)
    assert backend.eas_requests()[0].header("Expect") is None


@pytest.mark.parametrize(
    "expect",
    [
        [("Expect", "200-ok")],
        [("Expect", "100-continue, 200-ok")],
        [("Expect", "100-continue"), ("Expect", "200-ok")],  # the second field is not ignored
    ],
)
async def test_an_expectation_other_than_100_continue_is_417_logged_and_not_forwarded(
    gw: DemoGateway, backend: RecordingBackend, expect: list[tuple[str, str]]
) -> None:
    data = request_bytes("POST", query("FolderSync"), [*eas_headers(), *expect])
    with captured_log_output() as log:
        assert await exchange(gw, data) == [417]
    lines = [json.loads(x) for x in log.lines()]
    assert [x["status"] for x in lines if x.get("event") == "request"] == [417]
    kind = {"kind": "framing:expectation"}
    assert gw.registry.get_sample_value("sentry_bad_requests_total", kind) == 1
    assert forwarded(backend) == []


async def test_expect_on_http_1_0_gets_no_interim_answer(
    gw: DemoGateway, backend: RecordingBackend
) -> None:
    """HTTP/1.0 has no 100 Continue: the request is served, the final answer first."""
    headers = [*eas_headers(), ("Expect", "100-continue")]
    data = request_bytes("POST", query("FolderSync"), headers, FOLDERSYNC, version="HTTP/1.0")
    assert await exchange(gw, data) == [200]
    assert forwarded(backend) == [f"POST {query('FolderSync')}"]


async def test_the_gateway_adds_no_headers_of_its_own_client_library(
    gw: DemoGateway, backend: RecordingBackend
) -> None:
    """No Accept-Encoding the device never sent (the answer is relayed raw),
    no Accept, no Content-Type, no User-Agent."""
    headers = [("Authorization", basic_auth("alice", "secret")), ("MS-ASProtocolVersion", "14.1")]
    assert await exchange(gw, request_bytes("POST", query("FolderSync"), headers, b"")) == [200]
    await backend.wait_for(lambda: len(backend.eas_requests()) == 1)
    names = {k.lower() for k, _ in backend.eas_requests()[0].headers}
    assert names == {
        "host",
        "authorization",
        "ms-asprotocolversion",
        "content-length",
        "x-forwarded-for",
        "x-forwarded-proto",
    }


@pytest.mark.parametrize("whole", [True, False], ids=["one-write", "after-the-head"])
async def test_a_chunked_body_that_breaks_while_streamed_is_400_not_a_backend_error(
    gw: DemoGateway, backend: RecordingBackend, whole: bool
) -> None:
    """SendMail's body is streamed to the backend uninspected: when the
    device's chunked framing breaks mid-way, the device gets 400 (its own
    error, counted and logged as such), never a 502 blamed on the backend."""
    head = request_bytes(
        "POST", query("SendMail"), [*eas_headers(), ("Transfer-Encoding", "chunked")]
    )
    good, bad = b"5\r\nhello\r\n", b"zz\r\n" + b"x" * 100
    with captured_log_output() as log:
        async with await RawConnection.open(gw.url) as conn:
            if whole:
                await conn.send(head + good + bad)
            else:
                await conn.send(head + good)
                # the gateway is streaming the body: the first chunk reached the backend
                await backend.wait_for(lambda: any(b"hello" in c.raw for c in backend.connections))
                await conn.send(bad)
            answer = await conn.response()
            assert answer.status == 400
            assert await conn.closed_by_peer()
    lines = [json.loads(x) for x in log.lines()]
    assert [x["status"] for x in lines if x.get("event") == "request"] == [400]
    kind = {"kind": "framing:broken_body"}
    assert gw.registry.get_sample_value("sentry_bad_requests_total", kind) == 1
    assert backend.violations == []
