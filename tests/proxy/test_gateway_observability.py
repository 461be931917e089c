"""Metrics after a scripted run, access-log contents, secrets kept out of logs,
and graceful shutdown."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import structlog

from sentry.model import AssociationKey
from sentry.observability import configure_logging
from sentry.policy import block
from sentry.settings import LoggingSettings
from sentry.testing.eas_client import EasTestClient, basic_auth
from sentry.testing.gateway import DEMO_ROUTING, DemoGateway, demo_gateway, demo_pools

FOLDERSYNC = '<FolderSync xmlns="FolderHierarchy"><SyncKey>0</SyncKey></FolderSync>'
PASSWORD = "Tr0ub4dor&3-very-secret"


def sample(gw: DemoGateway, name: str, **labels: str) -> float:
    value = gw.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(LoggingSettings(level="debug", format="json"), stream=stream)
    yield stream
    structlog.reset_defaults()


async def test_metrics_after_a_scripted_run(
    gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    url = f"{gateway.url}/Microsoft-Server-ActiveSync"
    alice = EasTestClient(session, url, "alice", "secret", device_id="METRICS001")
    await alice.provision()
    await alice.post("FolderSync", FOLDERSYNC)
    state = gateway.gateway.state
    key = AssociationKey("METRICS001", "alice")
    await state.apply(block(state.snapshot, key, note="n", actor="t", now=time.time()))
    await alice.post("FolderSync", FOLDERSYNC)
    async with session.post(f"{url}?Cmd=Nope&User=a&DeviceId=X1&DeviceType=Y") as r:
        assert r.status == 400

    assert (
        sample(
            gateway,
            "sentry_requests_total",
            command="Provision",
            decision="forward",
            status_class="2xx",
        )
        == 2
    )
    assert (
        sample(
            gateway,
            "sentry_requests_total",
            command="FolderSync",
            decision="forward",
            status_class="2xx",
        )
        == 1
    )
    assert (
        sample(
            gateway,
            "sentry_requests_total",
            command="FolderSync",
            decision="refuse",
            status_class="2xx",
        )
        == 1
    )
    assert sample(gateway, "sentry_refusals_total", reason="MANUAL") == 1
    assert sample(gateway, "sentry_bad_requests_total", kind="query:CommandError") == 1
    assert sample(gateway, "sentry_request_duration_seconds_count", command="FolderSync") == 2
    assert sample(gateway, "sentry_requests_in_flight") == 0
    assert (
        sample(
            gateway,
            "sentry_backend_server_up",
            pool="exchange",
            server=gateway.backend("exchange").url,
        )
        == 1
    )

    async with session.get(f"{gateway.admin_url}/metrics") as r:
        text = await r.text()
    assert r.status == 200 and "sentry_requests_total" in text
    assert "METRICS001" not in text and "alice" not in text  # no identities as labels


async def test_health_endpoints(gateway: DemoGateway, session: aiohttp.ClientSession) -> None:
    async with session.get(f"{gateway.admin_url}/healthz") as r:
        assert r.status == 200
    await gateway.wait_ready()  # ready once every pool passed a first health check
    async with session.get(f"{gateway.admin_url}/readyz") as r:
        assert r.status == 200


async def test_access_log_has_the_fields_and_no_secrets(
    tmp_path: Path, session: aiohttp.ClientSession, json_logs: io.StringIO
) -> None:
    async with demo_gateway(tmp_path, demo_pools(), routing=DEMO_ROUTING) as gw:
        url = f"{gw.url}/Microsoft-Server-ActiveSync"
        headers = {"Authorization": basic_auth("alice", PASSWORD), "MS-ASProtocolVersion": "14.1",
                   "X-MS-PolicyKey": "0", "Cookie": "session=abc123secret"}  # fmt: skip
        query = (
            f"Cmd=FolderSync&User=alice&DeviceId=LOGS00001&DeviceType=iPhone&Password={PASSWORD}"
        )
        async with session.post(f"{url}?{query}", headers=headers, data=b"") as r:
            assert r.status in (200, 401)
        async with session.post(f"{url}?Cmd=Bad", headers=headers) as r:
            assert r.status == 400
    text = json_logs.getvalue()
    token = basic_auth("alice", PASSWORD).split()[1]
    assert PASSWORD not in text and token not in text and "abc123secret" not in text
    events = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    access = [e for e in events if e.get("event") == "request" and e.get("command") == "FolderSync"]
    assert access, text
    fields = "request_id command device_id device_type user decision reasons pool server"
    for field in [*fields.split(), "upstream_status", "bytes_out", "duration_ms"]:
        assert field in access[0], field
    assert any(e.get("decision") == "bad_request" for e in events)


async def test_shutdown_answers_held_pings_cleanly(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    ping_xml = (
        '<Ping xmlns="Ping"><HeartbeatInterval>600</HeartbeatInterval><Folders><Folder>'
        "<Id>1</Id><Class>Email</Class></Folder></Folders></Ping>"
    )
    async with demo_gateway(tmp_path, demo_pools(), routing=DEMO_ROUTING) as gw:
        client = EasTestClient(session, f"{gw.url}/Microsoft-Server-ActiveSync", "bob", "secret",
                               device_id="SHUTDOWN01")  # fmt: skip
        await client.provision()
        ping = asyncio.ensure_future(client.post("Ping", ping_xml, timeout=60))
        await gw.wait_held()
        stopping = asyncio.ensure_future(gw.gateway.stop())
        r = await asyncio.wait_for(ping, 30)  # a 600 s Ping, answered by the stop
        await stopping
        assert (r.status, r.text("Status")) == (200, "1")
    # the association and its last state were flushed to the SQLite file
    from sentry.store.sqlite import SqliteStore

    store = await SqliteStore.open(tmp_path / "sentry.db")
    try:
        snapshot = await store.load()
        assert snapshot.get(AssociationKey("SHUTDOWN01", "bob")) is not None
    finally:
        await store.close()
