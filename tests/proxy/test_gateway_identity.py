"""Issue 9 items 1, 2, 5 and 6 on the wire: realms, one backend type per device,
throwaway DeviceIds, strangers' wrong passwords.

A real gateway (TLS) in front of the demo layout with its realms (``DEMO_IDENTITY``):
alice, bob and shared on Exchange in the realm example.com (the realm of bare
names, NetBIOS EXAMPLE); carol@gmail.example on the gmail-type pool. Both
backends also have a ``john``: john@example.com (Exchange) and john@gmail.example
(Gmail), two mailboxes of two realms.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sentry.model import AssociationKey
from sentry.testing.eas_client import EasTestClient
from sentry.testing.gateway import (
    DEMO_IDENTITY,
    DEMO_REALM_ROUTING,
    DemoGateway,
    PoolSpec,
    demo_gateway,
)
from sentry.testing.state import BackendConfig, MailboxSpec

EAS = "/Microsoft-Server-ActiveSync"
FOLDER_SYNC = '<FolderSync xmlns="FolderHierarchy"><SyncKey>0</SyncKey></FolderSync>'
PING = (
    '<Ping xmlns="Ping"><HeartbeatInterval>600</HeartbeatInterval><Folders><Folder>'
    "<Id>1</Id><Class>Email</Class></Folder></Folders></Ping>"
)
EXCHANGE = (
    MailboxSpec("alice", "secret", "alice@example.com", "Alice"),
    MailboxSpec("bob", "secret", "bob@example.com", "Bob"),
    MailboxSpec("john", "secret", "john@example.com", "John"),
)
GMAIL = (
    MailboxSpec("carol", "secret", "carol@gmail.example", "Carol"),
    MailboxSpec("john", "gmail-pw", "john@gmail.example", "John at Gmail"),
)


def layout() -> dict[str, PoolSpec]:
    return {
        "exchange": PoolSpec(
            "exchange", (BackendConfig("exchange", EXCHANGE, require_provisioning=False),)
        ),
        "gmail": PoolSpec(
            "gmail", (BackendConfig("gmail", GMAIL, require_provisioning=False, min_heartbeat=1),)
        ),
    }


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[DemoGateway]:
    async with demo_gateway(
        tmp_path, layout(), identity=DEMO_IDENTITY, routing=DEMO_REALM_ROUTING
    ) as running:
        yield running


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as s:
        yield s


@pytest.fixture
def api(gw: DemoGateway, session: aiohttp.ClientSession) -> Any:
    async def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {gw.gateway.admin_token}"}
        async with session.request(method, gw.admin_url + path, json=body, headers=headers) as r:
            return r.status, await r.json(content_type=None)

    return call


def phone(
    gw: DemoGateway,
    session: aiohttp.ClientSession,
    user: str,
    device: str,
    password: str = "secret",
) -> EasTestClient:
    return EasTestClient(session, gw.url + EAS, user, password, device_id=device)


async def folder_sync(client: EasTestClient) -> tuple[int, str | None]:
    r = await client.post("FolderSync", FOLDER_SYNC)
    return r.status, (r.text("Status") if r.status == 200 and r.raw else None)


def seen_by(gw: DemoGateway, pool: str) -> int:
    return sum(gw.backend(pool).stats.requests.values())


async def test_every_spelling_of_one_realm_is_one_association(
    gw: DemoGateway, session: aiohttp.ClientSession
) -> None:
    for spelling in ("alice", "EXAMPLE\\Alice", "alice@example.com"):
        assert await folder_sync(phone(gw, session, spelling, "PHONE1")) == (200, "1")
    assert [r.key for r in gw.gateway.state.snapshot.associations()] == [
        AssociationKey("PHONE1", "alice@example.com")
    ]


async def test_two_realms_are_two_mailboxes_and_never_two_backend_types(
    gw: DemoGateway, session: aiohttp.ClientSession
) -> None:
    """john@example.com and john@gmail.example used to be one association whose
    pool flipped per request: both mailboxes reached two backend types from one phone."""
    assert await folder_sync(phone(gw, session, "john", "PHONE2")) == (200, "1")
    gmail = phone(gw, session, "john@gmail.example", "PHONE2", "gmail-pw")
    assert await folder_sync(gmail) == (200, "129")  # MIXED_BACKEND: one type per device
    assert seen_by(gw, "gmail") == 0  # the gmail backend never saw the phone
    assert await folder_sync(phone(gw, session, "john@gmail.example", "OTHER", "gmail-pw")) == (
        200,
        "1",
    )  # on another phone it is its own mailbox, routed to its own pool
    snap = gw.gateway.state.snapshot
    assert snap.get(AssociationKey("PHONE2", "john@example.com")).pool == "exchange"
    assert snap.get(AssociationKey("OTHER", "john@gmail.example")).pool == "gmail"


async def test_a_wrong_password_in_another_realm_changes_no_other_row(
    gw: DemoGateway, session: aiohttp.ClientSession
) -> None:
    """A refused request's domain used to rewrite the stored row's pool, re-opening
    a Gmail-type mailbox on an Exchange device and refusing every other mailbox."""
    assert await folder_sync(phone(gw, session, "alice", "PHONE3")) == (200, "1")
    assert await folder_sync(phone(gw, session, "bob", "PHONE3")) == (200, "1")
    stranger = phone(gw, session, "alice@gmail.example", "PHONE3", "wrong")
    assert await folder_sync(stranger) == (200, "129")
    assert await folder_sync(phone(gw, session, "alice", "PHONE3")) == (200, "1")
    assert await folder_sync(phone(gw, session, "bob", "PHONE3")) == (200, "1")
    snap = gw.gateway.state.snapshot
    assert {r.key.user: r.pool for r in snap.on_device("PHONE3")} == {
        "alice@example.com": "exchange",
        "bob@example.com": "exchange",
        "alice@gmail.example": "gmail",
    }


async def test_strangers_wrong_passwords_never_fill_a_users_device_quota(
    gw: DemoGateway, session: aiohttp.ClientSession, api: Any
) -> None:
    await api("PUT", "/api/preferences", {"max_devices_per_mailbox": 1})
    for i in range(3):
        stranger = phone(gw, session, "alice", f"STRANGER{i}", "guess")
        assert (await stranger.post("FolderSync", FOLDER_SYNC)).status == 401  # the backend's
    assert await folder_sync(phone(gw, session, "alice", "ALICEPHONE")) == (200, "1")
    status, page = await api("GET", "/api/associations?user=alice&verified=false")
    assert status == 200
    assert sorted(i["device_id"] for i in page["items"]) == [f"STRANGER{i}" for i in range(3)]
    assert all(not i["verified"] and i["verified_at"] is None for i in page["items"])
    _, page = await api("GET", "/api/associations?verified=true")
    assert [(i["device_id"], i["user"]) for i in page["items"]] == [
        ("ALICEPHONE", "alice@example.com")
    ]


async def test_a_managed_devices_two_mail_apps_share_one_backend_type(
    gw: DemoGateway, session: aiohttp.ClientSession, api: Any
) -> None:
    await api("PUT", "/api/users/alice", {"email": "alice@example.com"})
    body = {"id": "alice-phone", "owner": "alice", "eas_device_ids": ["MAILAPP", "OUTLOOKAPP"]}
    assert (await api("POST", "/api/devices", body))[0] == 201
    assert await folder_sync(phone(gw, session, "alice", "MAILAPP")) == (200, "1")
    carol = phone(gw, session, "carol@gmail.example", "OUTLOOKAPP")
    assert await folder_sync(carol) == (200, "129")
    assert seen_by(gw, "gmail") == 0
    _, device = await api("GET", "/api/devices/alice-phone")
    assert device["backend_type"]["backend_type"] == "exchange"
    assert device["backend_type"]["set_by"] == {"device_id": "MAILAPP", "user": "alice@example.com"}
    # alice's row is removed: the device keeps its type
    await api("POST", "/api/associations/MAILAPP/alice/remove", {"note": "app deleted"})
    assert await folder_sync(carol) == (200, "129")
    # an administrator resets it (note mandatory): carol is in, alice's app is out
    status, body = await api("POST", "/api/devices/alice-phone/reset-backend-type", {})
    assert (status, body["fields"]) == (400, {"note": "required"})
    status, body = await api(
        "POST",
        "/api/devices/alice-phone/reset-backend-type",
        {"note": "moved to Gmail", "backend_type": "gmail"},
    )
    assert status == 200 and body["established"]["backend_type"] == "gmail"
    assert await folder_sync(carol) == (200, "1")
    assert await folder_sync(phone(gw, session, "alice", "MAILAPP")) == (200, "129")
    _, audit = await api("GET", "/api/audit?limit=1")
    assert (audit["items"][0]["action"], audit["items"][0]["target"]) == (
        "reset_backend_type",
        "device:alice-phone",
    )


async def test_a_held_ping_of_a_row_that_becomes_mixed_ends_at_once(
    gw: DemoGateway, session: aiohttp.ClientSession
) -> None:
    """carol's first request on this phone is a Ping: held, not yet accepted (so
    it established nothing). alice's accepted request establishes Exchange: the
    held Ping is answered at once with the refusal, not at its heartbeat."""
    state = gw.gateway.state
    carol = phone(gw, session, "carol@gmail.example", "SHARED1")
    ping = asyncio.ensure_future(carol.post("Ping", PING, timeout=60))
    while state.longpolls.count() < 1:  # the positive signal: the poll is held
        await asyncio.sleep(0.01)
    assert state.snapshot.established("eas:SHARED1") is None
    assert await folder_sync(phone(gw, session, "alice", "SHARED1")) == (200, "1")
    r = await asyncio.wait_for(ping, 10)
    assert (r.status, r.text("Status")) == (200, "129")
    assert state.snapshot.established("eas:SHARED1").backend_type == "exchange"


async def test_throwaway_device_ids_are_listed_blockable_and_never_counted(
    gw: DemoGateway, session: aiohttp.ClientSession, api: Any
) -> None:
    await api("PUT", "/api/preferences", {"max_devices_per_mailbox": 1})
    assert await folder_sync(phone(gw, session, "alice", "ALICEPHONE")) == (200, "1")
    validate = phone(gw, session, "alice", "validate")
    assert await folder_sync(validate) == (200, "1")  # never counted, never limited
    _, page = await api("GET", "/api/associations?throwaway=true")
    assert [(i["device_id"], i["user"], i["throwaway"]) for i in page["items"]] == [
        ("VALIDATE", "alice@example.com", True)
    ]
    status, _ = await api("POST", "/api/associations/validate/alice/block", {"note": "no"})
    assert status == 200
    assert await folder_sync(validate) == (200, "129")
    assert await folder_sync(phone(gw, session, "bob", "validate")) == (200, "1")
    status, body = await api("POST", "/api/device-ids/validate/reset-backend-type", {"note": "n"})
    assert status == 400 and "many phones" in body["error"]


async def test_throwaway_device_ids_are_refused_with_auto_block(
    gw: DemoGateway, session: aiohttp.ClientSession, api: Any
) -> None:
    await api("PUT", "/api/preferences", {"auto_block_unregistered": True})
    assert await folder_sync(phone(gw, session, "alice", "webservice")) == (200, "129")
    assert seen_by(gw, "exchange") == 0


async def test_unverified_rows_expire_with_a_history_and_an_audit_record(
    gw: DemoGateway, session: aiohttp.ClientSession, api: Any
) -> None:
    state = gw.gateway.state
    assert (await phone(gw, session, "bob", "GUESS", "guess").post("Sync", b"")).status == 401
    assert await folder_sync(phone(gw, session, "bob", "BOBPHONE")) == (200, "1")
    assert await state.expire_unverified() == 0  # not old enough
    later = time.time() + gw.gateway.settings.store.unverified_expiry_seconds + 1
    state.clock = lambda: later
    assert await state.expire_unverified() == 1
    assert [r.key.device_id for r in state.snapshot.associations()] == ["BOBPHONE"]
    history = await state.store.history(AssociationKey("GUESS", "bob@example.com"))
    assert history[-1].kind == "expired"
    _, audit = await api("GET", "/api/audit?limit=1")
    assert audit["items"][0]["action"] == "expire_unverified"
    assert audit["items"][0]["actor"] == "system"
