"""Live revocation: a held Ping is answered as soon as its association is refused."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from sentry.model import AssociationKey, Device, Platform
from sentry.policy import block, register_device, set_compliance, wipe
from sentry.testing.eas_client import EasTestClient
from sentry.testing.gateway import DemoGateway

PING = (
    '<Ping xmlns="Ping"><HeartbeatInterval>600</HeartbeatInterval><Folders><Folder>'
    "<Id>1</Id><Class>Email</Class></Folder></Folders></Ping>"
)


async def _held_ping(gw: DemoGateway, session: aiohttp.ClientSession, user: str, device: str):  # type: ignore[no-untyped-def]
    client = EasTestClient(
        session, f"{gw.url}/Microsoft-Server-ActiveSync", user, "secret", device_id=device
    )
    await client.provision()
    held_before = gw.gateway.state.longpolls.count()
    task = asyncio.ensure_future(client.post("Ping", PING, timeout=60))
    while gw.gateway.state.longpolls.count() <= held_before:
        await asyncio.sleep(0.01)
    return client, task


async def test_admin_block_ends_a_held_ping_within_a_second(
    gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    _, ping = await _held_ping(gateway, session, "alice", "REVOKE0001")
    state = gateway.gateway.state
    key = AssociationKey("REVOKE0001", "alice")
    started = time.monotonic()
    ended = await state.apply(block(state.snapshot, key, note="stolen", actor="t", now=time.time()))
    r = await asyncio.wait_for(ping, 1.0)
    elapsed = time.monotonic() - started
    assert ended == 1
    assert (r.status, r.text("Status")) == (200, "129")
    assert elapsed < 1.0
    assert state.longpolls.count() == 0


async def test_wipe_ends_a_held_ping_with_status_140(
    gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    _, ping = await _held_ping(gateway, session, "bob", "REVOKE0002")
    state = gateway.gateway.state
    key = AssociationKey("REVOKE0002", "bob")
    await state.apply(wipe(state.snapshot, key, note="left", actor="t", now=time.time()))
    r = await asyncio.wait_for(ping, 1.0)
    assert (r.status, r.text("Status")) == (200, "140")


async def test_non_compliance_ends_every_mailbox_of_the_device_only(
    gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    state = gateway.gateway.state
    now = time.time()
    device = Device("dev-1", "alice", Platform.IOS, frozenset({"COMPLY0001"}))
    await state.apply(register_device(state.snapshot, device, actor="t", now=now))
    _, alice_ping = await _held_ping(gateway, session, "alice", "COMPLY0001")
    _, shared_ping = await _held_ping(gateway, session, "shared", "COMPLY0001")
    _, other_ping = await _held_ping(gateway, session, "alice", "COMPLY0002")  # another phone
    await state.apply(
        set_compliance(state.snapshot, "dev-1", frozenset({"compromised"}), actor="t", now=now)
    )
    for ping in (alice_ping, shared_ping):
        r = await asyncio.wait_for(ping, 1.0)
        assert r.text("Status") == "129"
    assert not other_ping.done()
    other_ping.cancel()
