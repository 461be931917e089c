"""The backend leg attacked from both ends, through a real gateway.

A device's odd header bytes must reach the backend as sent (or be refused),
and whatever a backend answers — garbage, a lying length, a smuggled second
answer, endless interim answers, bytes that are not UTF-8 — must give the
device a clean answer or a clean 502, never a 500, a hang, or another
request's answer. The backend is ``RecordingBackend`` with a responder each
test scripts, the device a raw connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from sentry.eas.wbxml import encode
from sentry.eas.xmlform import from_xml
from sentry.model import AssociationKey
from sentry.testing.eas_client import basic_auth
from sentry.testing.gateway import DemoGateway, PoolSpec, demo_gateway
from sentry.testing.raw_client import RawConnection, request_bytes
from sentry.testing.recording_backend import (
    RecordedRequest,
    RecordingBackend,
    RequestHead,
    default_responder,
    start_recording_backend,
)

EAS = "/Microsoft-Server-ActiveSync"
FOLDERSYNC = encode(
    from_xml('<FolderSync xmlns="FolderHierarchy"><SyncKey>0</SyncKey></FolderSync>')
)


def alices(
    command: str, body: bytes, device: str = "LEG0001", extra: list[tuple[str, str]] | None = None
) -> bytes:
    """alice's ``command`` request from an iPhone, as bytes on the wire."""
    headers = [
        ("Authorization", basic_auth("alice", "secret")),
        ("MS-ASProtocolVersion", "14.1"),
        ("Content-Type", "application/vnd.ms-sync.wbxml"),
        *(extra or []),
    ]
    target = f"{EAS}?Cmd={command}&User=alice&DeviceId={device}&DeviceType=iPhone"
    return request_bytes("POST", target, headers, body)


def foldersync(extra: list[tuple[str, str]] | None = None) -> bytes:
    return alices("FolderSync", FOLDERSYNC, extra=extra)


class Script:
    """The backend's answer to each EAS request, in order (then 200, empty)."""

    def __init__(self, *answers: bytes) -> None:
        self.answers = list(answers)

    def __call__(self, request: RecordedRequest | RequestHead) -> bytes:
        if request.method == "OPTIONS" or not self.answers:
            return default_responder(request)
        return self.answers.pop(0)


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
async def backend(script: Script) -> AsyncIterator[RecordingBackend]:
    async with await start_recording_backend(script) as b:
        yield b


@pytest.fixture
async def gw(tmp_path: Path, backend: RecordingBackend) -> AsyncIterator[DemoGateway]:
    pools = {"exchange": PoolSpec("exchange", extra={"servers": [backend.url]})}
    async with demo_gateway(tmp_path, pools, gateway={"tls": {"enabled": False}}) as g:
        yield g


async def ask(gw: DemoGateway, data: bytes, count: int = 1) -> list[tuple[int, bytes]]:
    async with await RawConnection.open(gw.url) as conn:
        await conn.send(data)
        return [(r.status, r.body) for r in await conn.responses(count)]


async def test_header_bytes_that_are_not_utf8_reach_the_backend_as_sent(
    gw: DemoGateway, backend: RecordingBackend
) -> None:
    [(status, _)] = await ask(gw, foldersync([("X-Device-Note", "caf\xe9 \xff")]))
    assert status == 200
    [forwarded] = backend.eas_requests()
    assert b"\r\nX-Device-Note: caf\xe9 \xff\r\n" in forwarded.raw
    assert backend.violations == []


GARBAGE: dict[str, bytes] = {
    "not http": b"SMTP ready\r\n\r\n",
    "lengths disagree": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
    "length not a number": b"HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n",
    "folded header": b"HTTP/1.1 200 OK\r\nX-A: b\r\n c\r\nContent-Length: 0\r\n\r\n",
    "bad chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "switching protocols": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
    "endless interim answers": b"HTTP/1.1 100 Continue\r\n\r\n" * 200,
}


@pytest.mark.parametrize("name", sorted(GARBAGE))
async def test_a_backend_answering_garbage_gets_the_device_a_502(
    gw: DemoGateway, script: Script, name: str
) -> None:
    script.answers.append(GARBAGE[name])
    [(status, body)] = await ask(gw, foldersync())
    assert status == 502
    assert b"SMTP" not in body and b"Upgrade" not in body  # a fixed text, nothing relayed
    assert (
        gw.registry.get_sample_value(
            "sentry_upstream_errors_total", {"pool": "exchange", "kind": "broken"}
        )
        == 1
    )


async def test_a_smuggled_second_answer_never_reaches_the_next_request(
    gw: DemoGateway, backend: RecordingBackend, script: Script
) -> None:
    """The backend appends a whole second answer after the first one's body:
    the gateway relays the first, drops the connection, and the device's next
    request is answered by a new exchange with the backend."""
    smuggled = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED"
    script.answers += [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst" + smuggled,
        b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond",
    ]
    answers = await ask(gw, foldersync() + foldersync(), count=2)
    assert answers == [(200, b"first"), (200, b"second")]
    eas = backend.eas_requests()
    assert len(eas) == 2 and eas[0].connection != eas[1].connection


@pytest.mark.parametrize(
    ("answer", "odd"),
    [
        # a value that is not UTF-8: its bad byte becomes U+FFFD, never silently dropped
        (b"HTTP/1.1 200 OK\r\nX-Odd: caf\xe9!\r\nContent-Length: 2\r\n\r\nok", "caf\ufffd!"),
        (b"HTTP/1.1 200 OK\r\nX-Odd: caf\xc3\xa9\r\nContent-Length: 2\r\n\r\nok", "caf\xe9"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok", None),
    ],
)
async def test_odd_but_valid_answers_are_relayed(
    gw: DemoGateway, script: Script, answer: bytes, odd: str | None
) -> None:
    script.answers.append(answer)
    async with await RawConnection.open(gw.url) as conn:
        await conn.send(foldersync())
        response = await conn.response()
    assert (response.status, response.body) == (200, b"ok")
    if odd is not None:  # the raw client reads header bytes as Latin-1
        assert response.header("X-Odd") == odd.encode("utf-8").decode("latin-1")


CUT: dict[str, Callable[[], bytes]] = {
    "body shorter than its length": lambda: b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nshort",
    "head cut": lambda: b"HTTP/1.1 200 OK\r\nContent-Le",
}


@pytest.mark.parametrize("name", sorted(CUT))
async def test_an_answer_cut_by_the_backend_closing_is_a_502(tmp_path: Path, name: str) -> None:
    script = Script(CUT[name]())
    async with await start_recording_backend(script, close_after_answer=True) as backend:
        pools = {"exchange": PoolSpec("exchange", extra={"servers": [backend.url]})}
        async with demo_gateway(tmp_path, pools, gateway={"tls": {"enabled": False}}) as gw:
            [(status, _)] = await ask(gw, foldersync())
    assert status == 502


async def test_a_streamed_answer_cut_by_the_backend_reaches_the_device_cut(
    tmp_path: Path,
) -> None:
    """An answer too large to read whole is relayed as it comes: when the
    backend breaks off, the device has the head and then the connection ends
    (only a cut connection tells it; the head must not be lost in the turn
    writer on the way out)."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n"
    script = Script(head + b"x" * 1000)
    async with await start_recording_backend(script, close_after_answer=True) as backend:
        pools = {"exchange": PoolSpec("exchange", extra={"servers": [backend.url]})}
        async with (
            demo_gateway(tmp_path, pools, gateway={"tls": {"enabled": False}}) as gw,
            await RawConnection.open(gw.url) as conn,
        ):
            await conn.send(foldersync())
            raw = await asyncio.wait_for(conn.reader.read(), 30)
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nContent-Length: 200000\r\n" in raw
    assert len(raw) < 200000  # cut, as the backend's answer was


async def test_a_second_host_is_refused_before_anything_is_forwarded(
    gw: DemoGateway, backend: RecordingBackend
) -> None:
    [(status, _)] = await ask(gw, foldersync([("Host", "attacker.example")]))
    assert status == 400
    assert backend.eas_requests() == []


async def test_the_forwarded_head_carries_one_host_and_no_hop_by_hop_fields(
    gw: DemoGateway, backend: RecordingBackend
) -> None:
    """Whatever the device claims: the backend's authority as the one Host,
    the device's own X-Forwarded-For dropped, hop-by-hop fields and the
    fields Connection names dropped, one Content-Length that is the body's."""
    extra = [
        ("X-Forwarded-For", "10.9.9.9"),
        ("Connection", "keep-alive, X-Internal-Secret"),
        ("X-Internal-Secret", "s3cret"),
        ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"),
    ]
    [(status, _)] = await ask(gw, foldersync(extra))
    assert status == 200
    [forwarded] = backend.eas_requests()
    authority = backend.url.removeprefix("http://")
    assert [v for k, v in forwarded.headers if k.lower() == "host"] == [authority]
    assert forwarded.header("X-Forwarded-For") == "127.0.0.1"
    for name in ("Connection", "X-Internal-Secret", "Keep-Alive", "TE", "Transfer-Encoding"):
        assert forwarded.header_count(name) == 0, name
    assert forwarded.header_count("Content-Length") == 1
    assert forwarded.header("Content-Length") == str(len(FOLDERSYNC))
    assert backend.violations == []


async def test_a_device_gone_mid_answer_leaves_no_backend_connection_behind(
    gw: DemoGateway, script: Script
) -> None:
    """An 8 MiB answer is being relayed when the device goes: the backend
    connection is closed, not parked for reuse half read."""
    body = b"y" * (8 * 1024 * 1024)
    script.answers.append(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    lean = gw.gateway.upstreams.pools["exchange"].lean
    assert lean is not None
    conn = await RawConnection.open(gw.url)
    await conn.send(foldersync())
    await conn.reader.readuntil(b"\r\n\r\n")  # the head is relayed; the body flows
    conn.writer.transport.abort()
    async with asyncio.timeout(10):
        while lean.open:
            await asyncio.sleep(0.005)
    assert lean.idle == 0


def provision(device: str = "LEG0001") -> bytes:
    body = encode(from_xml(
        '<Provision xmlns="Provision"><Policies><Policy>'
        "<PolicyType>MS-EAS-Provisioning-WBXML</PolicyType></Policy></Policies></Provision>"
    ))  # fmt: skip
    return alices("Provision", body, device)


def policy_answer(key: str, setting: str) -> bytes:
    return encode(from_xml(
        '<Provision xmlns="Provision"><Status>1</Status><Policies><Policy>'
        "<PolicyType>MS-EAS-Provisioning-WBXML</PolicyType><Status>1</Status>"
        f"<PolicyKey>{key}</PolicyKey><Data><EASProvisionDoc>"
        f"<DevicePasswordEnabled>{setting}</DevicePasswordEnabled>"
        "</EASProvisionDoc></Data></Policy></Policies></Provision>"
    ))  # fmt: skip


async def test_a_provision_answer_of_garbage_is_relayed_and_leaves_the_policy_recorded(
    gw: DemoGateway, script: Script
) -> None:
    """Policies named from memory (``fingerprints.py``) must not name bytes that do
    not decode: with another device's policy in memory, a Provision answer that is
    that policy's bytes cut short, or no WBXML at all, reaches the device as sent
    and changes nothing recorded; the whole policy then does change it."""
    good, other = policy_answer("11", "1"), policy_answer("22", "0")
    cut = policy_answer("33", "0")[:-3]  # the other policy's bytes, without their ENDs
    bodies = [other, good, cut, b"\x03\x01j\x00\x00\x0e\x45\x02junk", b"not wbxml", other]
    script.answers += [
        b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.ms-sync.wbxml\r\n"
        b"Content-Length: %d\r\n\r\n" % len(b) + b
        for b in bodies
    ]
    assert await ask(gw, provision("LEG0002")) == [(200, other)]  # now in memory
    key = AssociationKey("LEG0001", "alice")
    recorded = []
    for body in bodies[1:]:
        assert await ask(gw, provision()) == [(200, body)]
        row = gw.gateway.state.snapshot.get(key)
        assert row is not None
        recorded.append(row.policy_fingerprint)
    assert recorded[0] is not None
    assert recorded[:4] == [recorded[0]] * 4
    other_row = gw.gateway.state.snapshot.get(AssociationKey("LEG0002", "alice"))
    assert other_row is not None and recorded[4] == other_row.policy_fingerprint != recorded[0]
