"""Fail closed, fail loudly: dead backends, no route, oversized and malformed input."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from structlog.testing import capture_logs
from yarl import URL

from sentry.proxy.upstream import Server
from sentry.testing.backend import BackendConfig
from sentry.testing.eas_client import EasTestClient
from sentry.testing.faulty import refusing_port, short_body_backend, url_of
from sentry.testing.gateway import DEMO_ROUTING, DemoGateway, PoolSpec, demo_gateway, demo_pools

FOLDERSYNC = '<FolderSync xmlns="FolderHierarchy"><SyncKey>0</SyncKey></FolderSync>'
PING = (
    '<Ping xmlns="Ping"><HeartbeatInterval>{hb}</HeartbeatInterval><Folders><Folder>'
    "<Id>{folder}</Id><Class>Email</Class></Folder></Folders></Ping>"
)


def eas(gw: DemoGateway, session: aiohttp.ClientSession, user: str, device: str) -> EasTestClient:
    return EasTestClient(
        session, f"{gw.url}/Microsoft-Server-ActiveSync", user, "secret", device_id=device
    )


async def test_mailbox_without_route_fails_closed(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    async with demo_gateway(
        tmp_path, demo_pools(), routing={"default": None, "users": {"alice": "exchange"}}
    ) as gw:
        r = await eas(gw, session, "bob", "NOROUTE001").post("FolderSync", FOLDERSYNC)
        assert (r.status, r.text("Status")) == (200, "129")
        row = gw.gateway.state.snapshot.get(("NOROUTE001", "bob"))  # type: ignore[arg-type]
        assert row is not None and "NO_BACKEND" in {x.value for x in row.reasons}
        assert gw.backend("exchange").stats.total == 0


async def test_every_server_down_gives_503_with_retry_after(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    with refusing_port() as dead:
        servers = [url_of(dead)]
        pools = {
            "exchange": PoolSpec("exchange", extra={"servers": servers, "retry_after_seconds": 42})
        }
        async with demo_gateway(tmp_path, pools) as gw:
            for _ in range(2):  # the first discovers it, the second finds none healthy
                r = await eas(gw, session, "alice", "DOWN0001").post("FolderSync", FOLDERSYNC)
                assert r.status == 503
                assert r.headers["Retry-After"] == "42"


async def test_failover_to_a_second_server(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    pools = demo_pools(exchange_servers=1)
    with refusing_port() as dead:
        async with demo_gateway(tmp_path, pools, routing=DEMO_ROUTING) as gw:
            live = gw.backend("exchange")
            pool = gw.gateway.upstreams.pools["exchange"]
            pool.servers.insert(0, Server(URL(url_of(dead))))
            client = eas(gw, session, "alice", "FAILOVER01")
            for _ in range(3):
                r = await client.post("FolderSync", FOLDERSYNC)
                assert r.status == 200
            assert not pool.servers[0].healthy
            assert live.stats.total >= 3


@pytest.fixture
async def killable_backend(tmp_path: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sentry", "demo-backend", "--port", "0", "--min-heartbeat", "1",
        "--no-provisioning", "--users", "alice:secret",
        stdout=asyncio.subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
    url = line.split(" on ")[1].split()[0].removesuffix("/Microsoft-Server-ActiveSync")
    try:
        yield proc, url
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


async def test_backend_killed_mid_poll_gives_an_error_not_a_hang(
    tmp_path: Path,
    session: aiohttp.ClientSession,
    killable_backend: tuple[asyncio.subprocess.Process, str],
) -> None:
    proc, url = killable_backend
    pools = {"exchange": PoolSpec("exchange", extra={"servers": [url]})}
    async with demo_gateway(tmp_path, pools) as gw:
        client = eas(gw, session, "alice", "KILLED0001")
        ping = asyncio.ensure_future(client.post("Ping", PING.format(hb=300, folder="1")))
        await gw.wait_held()
        with capture_logs() as logs:
            os.killpg(proc.pid, signal.SIGKILL)
            r = await asyncio.wait_for(ping, 30)
        assert r.status == 502
        # the backend broke, the device did not go away: blamed on the backend
        (line,) = [e for e in logs if e["event"] == "request"]
        assert (line["status"], line["error_kind"]) == (502, "broken")
        labels = {"pool": "exchange", "kind": "broken"}
        assert gw.registry.get_sample_value("sentry_upstream_errors_total", labels) == 1
        assert (
            gw.registry.get_sample_value("sentry_client_disconnects_total", {"command": "Ping"})
            is None
        )


async def test_an_answer_cut_short_before_anything_was_sent_is_a_502(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    """A small answer is read whole before the device sees a byte of it, so a
    backend that closes before its declared length gets the device a clear
    502 (blamed on the backend), not a dropped connection."""
    async with short_body_backend() as backend:
        pools = {"exchange": PoolSpec("exchange", extra={"servers": [backend.url]})}
        async with demo_gateway(tmp_path, pools) as gw:
            with capture_logs() as logs:
                r = await eas(gw, session, "alice", "SHORT0001").post("FolderSync", FOLDERSYNC)
            assert r.status == 502 and backend.cut_short == 1
            (line,) = [e for e in logs if e["event"] == "request"]
            assert (line["status"], line["error_kind"]) == (502, "broken")
            labels = {"pool": "exchange", "kind": "broken"}
            assert gw.registry.get_sample_value("sentry_upstream_errors_total", labels) == 1


async def test_oversized_body_is_413(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    async with demo_gateway(
        tmp_path, demo_pools(), routing=DEMO_ROUTING, gateway={"max_request_bytes": 1000}
    ) as gw:
        client = eas(gw, session, "alice", "BIGBODY001")
        r = await client.post("SendMail", b"x" * 5000)
        assert r.status == 413
        assert gw.backend("exchange").stats.total == 0


async def test_oversized_chunked_body_is_413(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    async with demo_gateway(
        tmp_path, demo_pools(), routing=DEMO_ROUTING, gateway={"max_request_bytes": 1000}
    ) as gw:

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b"y" * 500

        query = "Cmd=SendMail&User=alice&DeviceId=CHUNKED01&DeviceType=X"
        url = f"{gw.url}/Microsoft-Server-ActiveSync?{query}"
        headers = {"Authorization": "Basic YWxpY2U6c2VjcmV0", "MS-ASProtocolVersion": "14.1",
                   "Content-Type": "message/rfc822"}  # fmt: skip
        async with session.post(url, data=chunks(), headers=headers) as r:
            assert r.status == 413


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("Cmd=Sync&User=alice&DeviceType=iPhone", 400),  # no DeviceId
        ("Cmd=Frobnicate&User=alice&DeviceId=A1&DeviceType=iPhone", 400),
        ("Cmd=Sync&User=alice&DeviceId=bad.id&DeviceType=iPhone", 400),
        ("jAAJBAp2MTQwRGV2aWNl", 400),  # truncated base64 blob
    ],
)
async def test_malformed_queries_are_400_with_a_log_event(
    gateway: DemoGateway, session: aiohttp.ClientSession, query: str, status: int
) -> None:
    headers = {"MS-ASProtocolVersion": "14.1", "Authorization": "Basic YWxpY2U6c2VjcmV0"}
    with capture_logs() as logs:
        async with session.post(
            f"{gateway.url}/Microsoft-Server-ActiveSync?{query}", headers=headers
        ) as r:
            assert r.status == status
            assert (await r.text()).strip()
    events = [e for e in logs if e.get("decision") == "bad_request"]
    assert events and events[0]["error"]
    assert gateway.backend("exchange").stats.total == 0


async def test_malformed_wbxml_body_is_400(
    gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    client = eas(gateway, session, "alice", "BADBODY001")
    with capture_logs() as logs:
        r = await client.post("Provision", bytes.fromhex("03016a00000e45"))
    assert r.status == 400
    assert any(e.get("decision") == "bad_request" for e in logs)
    assert gateway.backend("exchange").stats.total == 0


async def test_validate_device_is_listed_as_throwaway_and_never_counted(
    gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    # (Replaces "decided but not listed": throwaway DeviceIds are listed now, issue 9.)
    client = eas(gateway, session, "alice", "validate")
    r = await client.post("FolderSync", FOLDERSYNC)
    assert r.status == 200
    (row,) = gateway.gateway.state.snapshot.associations()
    assert row.throwaway and row.verified_at is not None and not row.counted
    assert gateway.gateway.state.snapshot.established("eas:VALIDATE") is None


def test_backend_config_default_is_usable() -> None:
    assert BackendConfig().mailboxes
