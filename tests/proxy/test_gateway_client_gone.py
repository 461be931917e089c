"""A device that drops its held Ping or Sync+Wait ends the backend request at
once, and the gateway blames the device, not the backend.

The device here is a TLS socket of the test's own: it writes one HTTP request
and closes (or resets) the connection while the gateway holds the request
upstream. The demo backend counts held requests whose connection went away
(``abandoned``), so "the backend saw it" is a positive signal to wait for.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from structlog.testing import capture_logs

from sentry.eas.wbxml import encode
from sentry.eas.xmlform import from_xml
from sentry.model import AssociationKey
from sentry.testing.eas_client import EasTestClient, basic_auth
from sentry.testing.gateway import DEMO_ROUTING, DemoGateway, demo_gateway, demo_pools

PING = (
    '<Ping xmlns="Ping"><HeartbeatInterval>900</HeartbeatInterval><Folders><Folder>'
    "<Id>1</Id><Class>Email</Class></Folder></Folders></Ping>"
)
SYNC = (
    '<Sync xmlns="AirSync"><Collections><Collection><SyncKey>{key}</SyncKey>'
    "<CollectionId>1</CollectionId></Collection></Collections>{extra}</Sync>"
)


def sample(gw: DemoGateway, name: str, **labels: str) -> float:
    value = gw.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def until(condition: Any, what: str) -> None:
    """Wait for ``condition()`` (a hang guard of 10 s, not a speed check)."""
    try:
        async with asyncio.timeout(10):
            while not condition():
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"never happened: {what}") from None


async def synced(client: EasTestClient) -> str:
    """A SyncKey for the Inbox after the initial and the first real Sync."""
    first = await client.post("Sync", SYNC.format(key="0", extra=""))
    key = first.text("Collections", "Collection", "SyncKey")
    second = await client.post("Sync", SYNC.format(key=key, extra=""))
    return second.text("Collections", "Collection", "SyncKey") or ""


async def raw_request(
    gw: DemoGateway, device: str, command: str, xml: str, policy_key: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Send one EAS request of alice's on a TLS connection of our own."""
    url = urlsplit(gw.url)
    tls = ssl.create_default_context()
    tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
    reader, writer = await asyncio.open_connection(url.hostname, url.port, ssl=tls)
    body = encode(from_xml(xml))
    query = f"Cmd={command}&User=alice&DeviceId={device}&DeviceType=TestPhone"
    key = "" if policy_key is None else f"X-MS-PolicyKey: {policy_key}\r\n"
    head = (
        f"POST /Microsoft-Server-ActiveSync?{query} HTTP/1.1\r\n"
        f"Host: {url.netloc}\r\n"
        f"Authorization: {basic_auth('alice', 'secret')}\r\n"
        f"MS-ASProtocolVersion: 16.1\r\n{key}"
        "Content-Type: application/vnd.ms-sync.wbxml\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await writer.drain()
    return reader, writer


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[DemoGateway]:
    async with demo_gateway(tmp_path, demo_pools(), routing=DEMO_ROUTING) as gw:
        yield gw


@pytest.mark.parametrize("hang_up", ["close", "reset"])
@pytest.mark.parametrize("command", ["Ping", "Sync"])
async def test_a_dropped_long_poll_ends_upstream_at_once(
    gw: DemoGateway, session: aiohttp.ClientSession, command: str, hang_up: str
) -> None:
    url = f"{gw.url}/Microsoft-Server-ActiveSync"
    client = EasTestClient(session, url, "alice", "secret", device_id=f"GONE{command}{hang_up}")
    await client.provision()
    xml = PING
    if command == "Sync":
        xml = SYNC.format(key=await synced(client), extra="<Wait>15</Wait>")
    backend = gw.backend("exchange")
    with capture_logs() as logs:
        _, writer = await raw_request(gw, client.device_id, command, xml, client.policy_key)
        await gw.wait_held()
        await backend.wait_held()
        assert sample(gw, "sentry_held_long_polls", command=command) == 1
        if hang_up == "close":
            writer.close()
        else:
            writer.transport.abort()
        # the backend sees its request's connection go away: it was cancelled
        await until(lambda: backend.abandoned == 1, "the backend request was cancelled")
        await until(lambda: sample(gw, "sentry_requests_in_flight") == 0, "in flight back to 0")
    assert backend.held == 0
    assert gw.gateway.state.longpolls.count() == 0
    assert sample(gw, "sentry_held_long_polls", command=command) == 0
    assert sample(gw, "sentry_client_disconnects_total", command=command) == 1
    assert sample(gw, "sentry_upstream_errors_total", pool="exchange", kind="broken") == 0
    (line,) = [e for e in logs if e["event"] == "request" and e["command"] == command]
    assert line["status"] == 499
    assert line["error_kind"] == "client_gone"
    assert line["upstream_cancelled"] is True
    assert "broke" not in line["error"]
    # the association is untouched and the device can come back at once
    r = await client.post(
        "FolderSync", '<FolderSync xmlns="FolderHierarchy"><SyncKey>0</SyncKey></FolderSync>'
    )
    assert r.status == 200


async def test_an_answered_poll_is_not_a_disconnect(
    gw: DemoGateway, session: aiohttp.ClientSession
) -> None:
    url = f"{gw.url}/Microsoft-Server-ActiveSync"
    client = EasTestClient(session, url, "bob", "secret", device_id="STAYS0001")
    await client.provision()
    ping = asyncio.ensure_future(client.post("Ping", PING, timeout=60))
    await gw.backend("exchange").wait_held()
    gw.backend("exchange").inject_message("bob", "new mail", "hello")
    r = await asyncio.wait_for(ping, 30)
    assert (r.status, r.text("Status")) == (200, "2")
    assert sample(gw, "sentry_client_disconnects_total", command="Ping") == 0
    assert gw.backend("exchange").abandoned == 0


async def test_a_device_hanging_up_mid_write_leaves_store_and_memory_agreeing(
    gw: DemoGateway,
) -> None:
    """The first request of a new association writes it to the store; the
    device hangs up while that write is in progress. The write, like SQLite's
    in its executor thread, goes on regardless: the snapshot must get it too."""
    store, state = gw.gateway.store, gw.gateway.state
    original, gate, entered = store.apply, asyncio.Event(), asyncio.Event()

    async def slow_write(changes: Any) -> None:
        async def write() -> None:
            entered.set()
            await gate.wait()
            await original(changes)

        await asyncio.shield(asyncio.ensure_future(write()))  # not stopped by a cancel

    store.apply = slow_write  # type: ignore[method-assign]
    foldersync = '<FolderSync xmlns="FolderHierarchy"><SyncKey>0</SyncKey></FolderSync>'
    _, writer = await raw_request(gw, "MIDWRITE01", "FolderSync", foldersync)
    await until(entered.is_set, "the first-sight write started")
    writer.transport.abort()
    server = gw.gateway.runners[0].server
    assert server is not None
    # connection_lost ran (and cancelled the handler) once the protocol has no transport
    gone = lambda: all(h.transport is None for h in server.connections)  # noqa: E731
    await until(gone, "the gateway saw the connection go")
    store.apply = original  # type: ignore[method-assign]
    gate.set()
    await until(lambda: sample(gw, "sentry_requests_in_flight") == 0, "the handler ended")
    assert sample(gw, "sentry_client_disconnects_total", command="FolderSync") == 1
    key = AssociationKey("MIDWRITE01", "alice")
    assert await store.get_association(key) is not None
    assert state.snapshot.get(key) is not None
