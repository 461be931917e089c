"""The gateway on the wire: forwarding, refusals, fail-closed, bad input."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from sentry.model import AssociationKey
from sentry.testing.eas_client import EasTestClient
from sentry.testing.gateway import DemoGateway


def client(
    gw: DemoGateway, session: aiohttp.ClientSession, user: str, device: str, **kw: object
) -> EasTestClient:
    url = f"{gw.url}/Microsoft-Server-ActiveSync"
    return EasTestClient(session, url, user, "secret", device_id=device, **kw)  # type: ignore[arg-type]


async def test_provision_and_foldersync_through_gateway(
    gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    c = client(gateway, session, "alice", "DEVA0001")
    key = await c.provision()
    assert key > 0
    r = await c.post(
        "FolderSync", '<FolderSync xmlns="FolderHierarchy"><SyncKey>0</SyncKey></FolderSync>'
    )
    assert r.status == 200
    assert r.text("Status") == "1"
    assert gateway.backend("exchange").stats.requests[("alice", "FolderSync")] == 1


async def test_mixed_backend_type_fails_closed(
    gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    alice = client(gateway, session, "alice", "DEVMIX01")
    await alice.provision()
    carol = client(gateway, session, "carol", "DEVMIX01")
    r = await carol.post(
        "FolderSync", '<FolderSync xmlns="FolderHierarchy"><SyncKey>0</SyncKey></FolderSync>'
    )
    assert r.status == 200
    assert r.text("Status") == "129"
    assert gateway.backend("gmail").stats.total == 0


async def test_unknown_path_and_method(
    gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    async with session.get(f"{gateway.url}/other") as r:
        assert r.status == 404
    async with session.get(f"{gateway.url}/Microsoft-Server-ActiveSync") as r:
        assert r.status == 405
    async with session.options(f"{gateway.url}/microsoft-server-activesync") as r:
        assert r.status == 200
        assert "MS-ASProtocolVersions" in r.headers


async def test_preferences_from_the_file_apply_until_an_admin_sets_them(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    from dataclasses import replace

    from sentry.policy import set_preferences
    from sentry.testing.gateway import DEMO_ROUTING, demo_gateway, demo_pools

    foldersync = '<FolderSync xmlns="FolderHierarchy"><SyncKey>0</SyncKey></FolderSync>'

    prefs = {"auto_block_unregistered": True}
    async with demo_gateway(tmp_path, demo_pools(), routing=DEMO_ROUTING, preferences=prefs) as gw:
        r = await client(gw, session, "alice", "PREFS0001").post("FolderSync", foldersync)
        assert r.text("Status") == "129"  # auto-block from the file
        state = gw.gateway.state
        now = state.clock()
        changed = replace(state.snapshot.prefs, max_devices_per_mailbox=3)
        await state.apply(set_preferences(state.snapshot, changed, actor="a", now=now))
    async with demo_gateway(tmp_path, demo_pools(), routing=DEMO_ROUTING, preferences=prefs) as gw:
        stored = gw.gateway.state.snapshot.prefs
        assert stored.auto_block_unregistered and stored.max_devices_per_mailbox == 3


async def test_tls_connections_get_small_read_buffers(gateway: DemoGateway) -> None:
    import asyncio.sslproto

    from sentry.listeners import TLS_READ_BUFFER

    assert gateway.url.startswith("https://")
    assert asyncio.sslproto.SSLProtocol.max_size == TLS_READ_BUFFER == 2 * 1024


async def test_two_policies_on_one_device_are_flagged_ambiguous(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    from sentry.testing.backend import BackendConfig
    from sentry.testing.gateway import PoolSpec, demo_gateway

    strict = BackendConfig(
        "exchange", (("carol", "secret", "carol@corp.example", "Carol"),),
        policy=(("DevicePasswordEnabled", "1"),),
    )  # fmt: skip
    pools = {
        "exchange": PoolSpec("exchange", (BackendConfig("exchange"),)),
        "corp": PoolSpec("exchange", (strict,)),
    }
    routing = {"default": "exchange", "users": {"carol": "corp"}}
    async with demo_gateway(tmp_path, pools, routing=routing) as gw:
        await client(gw, session, "alice", "AMBIG0001").provision()
        snapshot = gw.gateway.state.snapshot
        alice = snapshot.get(AssociationKey("AMBIG0001", "alice"))
        assert alice is not None and alice.policy_fingerprint and not alice.ambiguous_policy
        await client(gw, session, "bob", "AMBIG0001").provision()  # same policy: still fine
        assert not snapshot.get(AssociationKey("AMBIG0001", "alice")).ambiguous_policy  # type: ignore[union-attr]
        await client(gw, session, "carol", "AMBIG0001").provision()
        rows = snapshot.on_device("AMBIG0001")
        assert len(rows) == 3 and all(r.ambiguous_policy for r in rows)


async def test_a_provision_whose_policy_is_already_recorded_does_not_wait_for_the_writer(
    gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    """A busy node hands its writer lock on once per turn of its event loop: a
    Provision answer carrying the policy already recorded has nothing to write
    and must not queue there (each did, 100-300 ms at 64 connections)."""
    c = client(gateway, session, "alice", "DEVFAST01")
    await c.provision()
    state, key = gateway.gateway.state, AssociationKey("DEVFAST01", "alice")
    row = state.snapshot.get(key)
    assert row is not None and row.policy_fingerprint
    recorded = row.policy_fingerprint
    async with state.writer:  # every commit waits while the test holds it
        assert await asyncio.wait_for(c.provision(), 5) > 0
    row = state.snapshot.get(key)
    assert row is not None and row.policy_fingerprint == recorded
