"""gateway.header_limits mean what they say, exactly at the boundary.

``request_line_bytes`` is the whole request line (method, target, version),
``field_bytes`` one header field's name plus value, ``fields`` the number of
header fields. The backend is the strict recording backend, so what is
accepted is also shown to arrive intact.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sentry.testing.eas_client import basic_auth
from sentry.testing.gateway import DemoGateway, PoolSpec, demo_gateway
from sentry.testing.raw_client import RawConnection, request_bytes
from sentry.testing.recording_backend import RecordingBackend, start_recording_backend

QUERY = "/Microsoft-Server-ActiveSync?Cmd=FolderSync&User=alice&DeviceId=LIMITS01&DeviceType=iPhone"
VERSION = ("MS-ASProtocolVersion", "14.1")
AUTH = ("Authorization", basic_auth("alice", "secret"))
LINE = 8192
FIELD = 16384
FIELDS = 100


@pytest.fixture
async def backend() -> AsyncIterator[RecordingBackend]:
    async with await start_recording_backend() as b:
        yield b


@pytest.fixture(params=[False, True], ids=["http", "https"])
async def gw(
    request: pytest.FixtureRequest, tmp_path: Path, backend: RecordingBackend
) -> AsyncIterator[DemoGateway]:
    pools = {"exchange": PoolSpec("exchange", extra={"servers": [backend.url]})}
    async with demo_gateway(tmp_path, pools, gateway={"tls": {"enabled": request.param}}) as g:
        yield g


async def status_of(gw: DemoGateway, data: bytes) -> int:
    async with await RawConnection.open(gw.url) as conn:
        await conn.send(data)
        return (await conn.response()).status


def line_of(length: int) -> str:
    pad = length - len(f"POST {QUERY}&Pad= HTTP/1.1")
    return f"{QUERY}&Pad={'p' * pad}"


async def post(gw: DemoGateway, target: str, *headers: tuple[str, str]) -> int:
    return await status_of(gw, request_bytes("POST", target, [VERSION, *headers]))


async def test_the_request_line_limit_is_exact(gw: DemoGateway, backend: RecordingBackend) -> None:
    assert await post(gw, line_of(LINE), AUTH) == 200
    assert await post(gw, line_of(LINE + 1), AUTH) == 414
    assert await post(gw, line_of(LINE + 5000), AUTH) == 414
    await backend.wait_for(lambda: len(backend.eas_requests()) == 1)
    assert len(backend.eas_requests()[0].target) == len(line_of(LINE))


async def test_a_16000_byte_credential_passes_intact(
    gw: DemoGateway, backend: RecordingBackend
) -> None:
    value = basic_auth("alice", "p" * 11_990)
    assert len("Authorization") + len(value) > 16_000
    assert await post(gw, QUERY, ("Authorization", value)) == 200
    await backend.wait_for(lambda: len(backend.eas_requests()) == 1)
    assert backend.eas_requests()[0].header("Authorization") == value


async def test_a_16000_byte_bearer_token_reaches_the_identity_step(gw: DemoGateway) -> None:
    """Issue 10: such a token got 400. Its head is within the limits now, and
    what answers is the identity step (no OAuth configured here: 403)."""
    token = "Bearer " + "t" * (16_000 - len("Bearer "))
    assert await post(gw, QUERY, ("Authorization", token)) == 403


async def test_the_field_limit_is_name_plus_value_exactly(
    gw: DemoGateway, backend: RecordingBackend
) -> None:
    name = "X-Long"
    at_limit = "a" * (FIELD - len(name))
    assert await post(gw, QUERY, AUTH, (name, at_limit)) == 200
    assert await post(gw, QUERY, AUTH, (name, at_limit + "a")) == 431
    assert await post(gw, QUERY, AUTH, (name, at_limit * 3)) == 431
    await backend.wait_for(lambda: len(backend.eas_requests()) == 1)
    assert backend.eas_requests()[0].header(name) == at_limit


async def test_the_field_count_limit_is_exact(gw: DemoGateway, backend: RecordingBackend) -> None:
    # Host and Content-Length are added by request_bytes: 4 fields before the padding.
    pad = [(f"X-Pad-{i}", "v") for i in range(FIELDS - 4)]
    assert await post(gw, QUERY, AUTH, *pad) == 200
    assert await post(gw, QUERY, AUTH, *pad, ("X-One", "more")) == 431
    assert await post(gw, QUERY, AUTH, *pad * 3) == 431
    await backend.wait_for(lambda: len(backend.eas_requests()) == 1)


async def test_limits_follow_the_configuration(tmp_path: Path, backend: RecordingBackend) -> None:
    pools = {"exchange": PoolSpec("exchange", extra={"servers": [backend.url]})}
    limits = {"request_line_bytes": 200, "field_bytes": 300, "fields": 10}
    gateway = {"tls": {"enabled": False}, "header_limits": limits}
    async with demo_gateway(tmp_path, pools, gateway=gateway) as gw:
        assert await post(gw, line_of(200), AUTH) == 200
        assert await post(gw, line_of(201), AUTH) == 414
        value = "v" * (300 - len("X-Big"))
        assert await post(gw, QUERY, AUTH, ("X-Big", value)) == 200
        assert await post(gw, QUERY, AUTH, ("X-Big", value + "v")) == 431


async def test_a_16000_byte_credential_reaches_the_demo_backend(tmp_path: Path) -> None:
    """Issue 10: a 16,000-byte header got 400 from the demo backend's own
    8 KiB limit, relayed; the demo backend now accepts what the gateway
    accepts and answers it (401: not alice's password)."""
    value = basic_auth("alice", "p" * 11_990)
    async with demo_gateway(tmp_path, gateway={"tls": {"enabled": False}}) as gw:
        assert await post(gw, QUERY, ("Authorization", value)) == 401
