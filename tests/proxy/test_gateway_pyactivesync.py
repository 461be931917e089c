"""A real third-party client (pyactivesync, EAS 16.1) through the gateway over TLS.

pyactivesync is synchronous (requests), so its calls run in worker threads
while the gateway and the demo backends run on the test's event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import requests
from pyactivesync import Client, FolderType
from pyactivesync.exceptions import EASError, StatusError

from sentry.model import AssociationKey
from sentry.policy import block
from sentry.policy.easpolicy import assign, policy_from, put_policy
from sentry.testing.gateway import DEMO_ROUTING, DemoGateway, demo_gateway, demo_pools

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")


@pytest.fixture
async def tls_gateway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[DemoGateway]:
    # requests lets a CA bundle from the environment override verify=False.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    async with demo_gateway(tmp_path, demo_pools(), routing=DEMO_ROUTING) as gw:
        yield gw


def _client(gw: DemoGateway, user: str, device_id: str) -> Client:
    host = gw.url.removeprefix("https://")
    return Client(host, user, "secret", device_id=device_id, verify_ssl=False, timeout=15.0)


def _inbox_subjects(client: Client) -> tuple[str, list[str]]:
    folders = client.list_folders()
    inbox = next(f for f in folders if f.type == FolderType.INBOX)
    first = client.sync_folder(inbox.id)  # SyncKey 0: a key, no items
    synced = client.sync_folder(inbox.id, first.sync_key)
    return inbox.id, [item.server_id for item in synced.added]


async def _ping_after_injection(
    gw: DemoGateway, client: Client, user: str, inbox: str
) -> list[str]:
    ping = asyncio.create_task(asyncio.to_thread(client.ping, inbox, heartbeat=60, timeout=30))  # noqa: TID251
    backend = gw.backend("exchange")
    await backend.wait_held(1, timeout=10)
    backend.inject_message(user, "pushed through the gateway", "hello")
    result = await asyncio.wait_for(ping, 20)
    assert result.status == "2"
    return list(result.changed_folder_ids)


async def test_two_mailboxes_on_one_device(tls_gateway: DemoGateway) -> None:
    for user in ("alice", "shared"):
        client = _client(tls_gateway, user, "PYASDEVICE01")
        with client:
            await asyncio.to_thread(client.provision)
            inbox, subjects = await asyncio.to_thread(_inbox_subjects, client)
            assert subjects, f"{user}: the inbox synced no messages"
            assert await _ping_after_injection(tls_gateway, client, user, inbox) == [inbox]
    snapshot = tls_gateway.gateway.state.snapshot
    assert {r.key.user for r in snapshot.on_device("PYASDEVICE01")} == {"alice", "shared"}


async def test_same_mailbox_from_two_devices(tls_gateway: DemoGateway) -> None:
    for device in ("PYASPHONE001", "PYASTABLET01"):
        client = _client(tls_gateway, "bob", device)
        with client:
            await asyncio.to_thread(client.provision)
            inbox, subjects = await asyncio.to_thread(_inbox_subjects, client)
            assert subjects
            assert await _ping_after_injection(tls_gateway, client, "bob", inbox) == [inbox]
    assert len(tls_gateway.gateway.state.snapshot.of_user("bob")) == 2


async def test_blocked_client_sees_a_block_not_a_password_prompt(tls_gateway: DemoGateway) -> None:
    client = _client(tls_gateway, "alice", "PYASBLOCK001")
    with client:
        await asyncio.to_thread(client.provision)
        state = tls_gateway.gateway.state
        key = AssociationKey("PYASBLOCK001", "alice")
        await state.apply(
            block(state.snapshot, key, note="lost phone", actor="test", now=time.time())
        )
        backend = tls_gateway.backend("exchange")
        before = backend.stats.total
        with pytest.raises(StatusError) as caught:
            await asyncio.to_thread(client.list_folders)
        assert caught.value.code == "129"
        assert not isinstance(caught.value, requests.HTTPError)
        assert backend.stats.total == before, "a refused request reached the backend"


async def test_gmail_mailbox_on_an_exchange_device_fails_closed(tls_gateway: DemoGateway) -> None:
    with _client(tls_gateway, "alice", "PYASMIXED001") as alice:
        await asyncio.to_thread(alice.provision)
    with _client(tls_gateway, "carol", "PYASMIXED001") as carol, pytest.raises(EASError):
        await asyncio.to_thread(carol.provision)
    assert tls_gateway.backend("gmail").stats.total == 0


async def test_gateway_policy_with_a_real_client(tls_gateway: DemoGateway) -> None:
    """pyactivesync provisions against the gateway's own policy, syncs and pushes with
    the gateway's key (the backend sees its own), and after Revert gets 144, provisions
    again (now with the backend) and syncs with the backend's key."""
    state = tls_gateway.gateway.state
    policy = policy_from("strict", {"settings": {"DevicePasswordEnabled": True}})
    await state.commit(lambda snap, now: put_policy(snap, policy, actor="t", now=now))
    await state.commit(
        lambda snap, now: assign(snap, "user", "alice", "strict", actor="t", now=now)
    )
    key = AssociationKey("PYASPOLICY01", "alice")
    with _client(tls_gateway, "alice", "PYASPOLICY01") as client:
        granted = int(await asyncio.to_thread(client.provision))
        record = state.snapshot.provisioning[key]
        assert record.issued == granted and record.backend_key not in (None, granted)
        inbox, subjects = await asyncio.to_thread(_inbox_subjects, client)
        assert subjects
        assert await _ping_after_injection(tls_gateway, client, "alice", inbox) == [inbox]
        await state.commit(
            lambda snap, now: assign(snap, "user", "alice", None, actor="t", now=now)
        )
        with pytest.raises(StatusError) as caught:
            await asyncio.to_thread(client.list_folders)
        assert caught.value.code == "144"
        again = int(await asyncio.to_thread(client.provision))
        finals = {
            r.final for (u, d), r in tls_gateway.backend("exchange").state.policies.items()
            if u == "alice" and d.upper() == "PYASPOLICY01"
        }  # fmt: skip
        assert finals == {again} and again != granted  # the backend's own key now
        assert key not in state.snapshot.provisioning
        _, subjects = await asyncio.to_thread(_inbox_subjects, client)
        assert subjects
