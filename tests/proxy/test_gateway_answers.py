"""The gateway's own answers on the wire: wipe acknowledgements (MS-ASPROV
3.2.5.1.2.2), the per-device limit's status, and the server headers, status
line and body of every answer the gateway makes itself."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from sentry.eas.wbxml import decode
from sentry.model import AssociationKey, WipeStatus
from sentry.policy import wipe
from sentry.testing.eas_client import EasTestClient, basic_auth
from sentry.testing.faulty import refusing_port, url_of
from sentry.testing.gateway import DEMO_ROUTING, DemoGateway, PoolSpec, demo_gateway, demo_pools

FOLDERSYNC = '<FolderSync xmlns="FolderHierarchy"><SyncKey>0</SyncKey></FolderSync>'
ACK = '<Provision xmlns="Provision"><{kind}><Status>{status}</Status></{kind}></Provision>'
SERVER = ("MS-Server-ActiveSync", "15.1")
EAS = "/Microsoft-Server-ActiveSync"


def client(gw: DemoGateway, session: aiohttp.ClientSession, user: str, device: str, **kw: str):  # type: ignore[no-untyped-def]
    return EasTestClient(session, f"{gw.url}{EAS}", user, "secret", device_id=device, **kw)


async def _wipe(gw: DemoGateway, device: str, user: str, *, account_only: bool = False) -> None:
    state = gw.gateway.state
    key = AssociationKey(device, user)
    changes = wipe(
        state.snapshot, key, account_only=account_only, note="lost", actor="t", now=time.time()
    )
    await state.apply(changes)


async def test_failed_then_successful_wipe_acknowledgement(
    gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    phone = client(gateway, session, "alice", "WIPEACK001")
    await phone.provision()
    await _wipe(gateway, "WIPEACK001", "alice")
    directive = await phone.post("Provision", '<Provision xmlns="Provision"/>')
    assert directive.text("Status") == "1" and directive.element.find("RemoteWipe") is not None
    # The client reports failure: Status 2 and the directive again.
    failed = await phone.post("Provision", ACK.format(kind="RemoteWipe", status=2))
    assert (failed.status, failed.text("Status")) == (200, "2")
    assert failed.element.find("RemoteWipe") is not None
    row = gateway.gateway.state.snapshot.get(AssociationKey("WIPEACK001", "alice"))
    assert row is not None and row.wipe is WipeStatus.FAILED
    # Success: Status 1 and nothing else (it used to be a 129 refusal).
    done = await phone.post("Provision", ACK.format(kind="RemoteWipe", status=1))
    assert (done.status, done.raw) == (200, bytes.fromhex("03016A00000E454B0331000101"))
    assert done.headers["MS-Server-ActiveSync"] == "15.1"
    row = gateway.gateway.state.snapshot.get(AssociationKey("WIPEACK001", "alice"))
    assert row is not None and row.wipe is WipeStatus.WIPED
    # Afterwards the wiped row is refused; the backend never saw the acknowledgements.
    assert (await phone.post("FolderSync", FOLDERSYNC)).text("Status") == "129"
    assert gateway.backend("exchange").stats.by_command.get("Provision", 0) == 2  # provision()


async def test_account_only_wipe_acknowledgement_at_16_1(
    gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    phone = client(gateway, session, "bob", "WIPEACK002")
    await phone.provision()
    await _wipe(gateway, "WIPEACK002", "bob", account_only=True)
    failed = await phone.post("Provision", ACK.format(kind="AccountOnlyRemoteWipe", status=2))
    root = decode(failed.raw)
    assert root.child_text("Status") == "2"
    assert root.find("AccountOnlyRemoteWipe") is not None and root.find("RemoteWipe") is None
    done = await phone.post("Provision", ACK.format(kind="AccountOnlyRemoteWipe", status=1))
    assert done.text("Status") == "1" and done.element.find("AccountOnlyRemoteWipe") is None


async def test_too_many_mailboxes_on_a_device_is_129_not_177(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    prefs = {"max_mailboxes_per_device": 1, "max_devices_per_mailbox": 1}
    async with demo_gateway(tmp_path, demo_pools(), routing=DEMO_ROUTING, preferences=prefs) as gw:
        await client(gw, session, "alice", "LIMIT0001").provision()  # forwarded: the first
        second_mailbox = client(gw, session, "bob", "LIMIT0001")
        r = await second_mailbox.post("FolderSync", FOLDERSYNC)
        assert r.text("Status") == "129"  # PER_DEVICE_LIMIT: 129, not 177
        second_device = client(gw, session, "alice", "LIMIT0002")
        r = await second_device.post("FolderSync", FOLDERSYNC)
        assert r.text("Status") == "177"  # PER_MAILBOX_LIMIT: too many devices for the user


# --- every answer the gateway makes itself -------------------------------------------


def _assert_own(resp: aiohttp.ClientResponse, status: int, reason: str) -> None:
    assert (resp.status, resp.reason) == (status, reason)
    assert resp.headers.get(SERVER[0]) == SERVER[1], dict(resp.headers)
    assert resp.headers.get("Cache-Control") == "private"


HEADERS = {"Authorization": basic_auth("alice", "secret"), "MS-ASProtocolVersion": "14.1"}


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("Cmd=FolderSync&User=alice&DeviceType=Phone", "DeviceIdMissingOrInvalid (108)"),
        ("Cmd=Nope&User=alice&DeviceId=X1&DeviceType=Phone", "CommandNotSupported (137)"),
        ("Cmd=FolderSync&User=alice&DeviceId=X1", "DeviceTypeMissingOrInvalid (109)"),
    ],
)
async def test_malformed_request_is_the_eas_style_400(
    gateway: DemoGateway, session: aiohttp.ClientSession, query: str, named: str
) -> None:
    async with session.post(f"{gateway.url}{EAS}?{query}", headers=HEADERS) as r:
        _assert_own(r, 400, "Bad Request")
        assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
        body = await r.text()
    assert body.startswith(named + ": ") and body.endswith("\n") and body.count("\n") == 1
    assert gateway.backend("exchange").stats.total == 0


async def test_malformed_wbxml_body_is_the_eas_style_400(
    gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    headers = {**HEADERS, "Content-Type": "application/vnd.ms-sync.wbxml"}
    url = f"{gateway.url}{EAS}?Cmd=Provision&User=alice&DeviceId=BADBODY1&DeviceType=Phone"
    async with session.post(url, headers=headers, data=bytes.fromhex("03016A00000E45")) as r:
        _assert_own(r, 400, "Bad Request")
        assert (await r.text()).startswith("InvalidWBXML (102): ")


async def test_other_paths_and_methods(
    gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    async with session.get(f"{gateway.url}/elsewhere") as r:
        _assert_own(r, 404, "Not Found")
    async with session.get(f"{gateway.url}{EAS}") as r:
        _assert_own(r, 405, "Method Not Allowed")
        assert r.headers["Allow"] == "OPTIONS,POST"


async def test_refusals_wipes_and_old_clients(
    gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    modern = client(gateway, session, "alice", "OWNANSWER1")
    await modern.provision()
    await _wipe(gateway, "OWNANSWER1", "alice")
    old = client(gateway, session, "alice", "OWNANSWER1", version="12.1")
    url = f"{gateway.url}{EAS}?Cmd=FolderSync&User=alice&DeviceId=OWNANSWER1&DeviceType=T"
    async with session.post(url, headers={**HEADERS, "MS-ASProtocolVersion": "12.1"}) as r:
        _assert_own(r, 449, "Retry after sending a PROVISION command")
        assert r.headers["Content-Type"] == "application/vnd.ms-sync.wbxml"
    async with session.post(url, headers=HEADERS, data=b"") as r:
        _assert_own(r, 200, "OK")  # 140 RemoteWipeRequested in the body
    await old.post("Provision", ACK.format(kind="RemoteWipe", status=1))
    async with session.post(url, headers={**HEADERS, "MS-ASProtocolVersion": "12.1"}) as r:
        _assert_own(r, 403, "Forbidden")  # wiped, and a 12.1 client: 403 with no body
        assert await r.read() == b""


async def test_http403_style_refusal_and_413(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    async with demo_gateway(
        tmp_path,
        demo_pools(),
        routing={"default": None, "users": {"alice": "exchange"}},
        preferences={"refusal_style": "http403"},
        gateway={"max_request_bytes": 1000},
    ) as gw:
        refused = await client(gw, session, "bob", "OWNANSWER2").post("FolderSync", FOLDERSYNC)
        assert (refused.status, refused.raw) == (403, b"")  # NO_BACKEND, http403 style
        assert refused.headers["MS-Server-ActiveSync"] == "15.1"
        url = f"{gw.url}{EAS}?Cmd=SendMail&User=alice&DeviceId=OWNANSWER2&DeviceType=T"
        async with session.post(url, headers=HEADERS, data=b"x" * 5000) as r:
            _assert_own(r, 413, "Request Entity Too Large")
            assert "exceeds 1000 bytes" in await r.text()
        # OPTIONS for a mailbox no pool routes: the gateway answers it itself.
        async with session.options(f"{gw.url}{EAS}", headers={**HEADERS, **_auth("bob")}) as r:
            _assert_own(r, 200, "OK")
            assert r.headers["MS-ASProtocolVersions"]


def _auth(user: str) -> dict[str, str]:
    return {"Authorization": basic_auth(user, "secret")}


async def test_no_healthy_server_is_503_with_retry_after(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    with refusing_port() as closed:  # held for the whole test: nobody else can take the port
        await _no_healthy_server(tmp_path, session, url_of(closed))


async def _no_healthy_server(tmp_path: Path, session: aiohttp.ClientSession, dead: str) -> None:
    pools = {"exchange": PoolSpec("exchange", extra={"servers": [dead], "retry_after_seconds": 9})}
    async with demo_gateway(tmp_path, pools) as gw:
        url = f"{gw.url}{EAS}?Cmd=FolderSync&User=alice&DeviceId=DOWN0002&DeviceType=T"
        for _ in range(2):  # the first discovers the server is down, the second finds none
            async with session.post(url, headers=HEADERS, data=b"") as r:
                status, headers, body = r.status, r.headers, await r.text()
                if status == 503:
                    _assert_own(r, 503, "Service Unavailable")
        assert status == 503 and headers["Retry-After"] == "9"
        assert body.count("\n") == 1


async def test_a_poll_ended_by_shutdown_carries_the_server_headers(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    ping = (
        '<Ping xmlns="Ping"><HeartbeatInterval>600</HeartbeatInterval><Folders><Folder>'
        "<Id>1</Id><Class>Email</Class></Folder></Folders></Ping>"
    )
    async with demo_gateway(tmp_path, demo_pools(), routing=DEMO_ROUTING) as gw:
        phone = client(gw, session, "bob", "ENDED0001")
        await phone.provision()
        held = asyncio.ensure_future(phone.post("Ping", ping, timeout=30))
        async with asyncio.timeout(10):
            while gw.gateway.state.longpolls.count() == 0:
                await asyncio.sleep(0.01)
        stopping = asyncio.ensure_future(gw.gateway.stop())
        r = await asyncio.wait_for(held, 5)
        await stopping
    assert (r.status, r.text("Status")) == (200, "1")
    assert r.headers["MS-Server-ActiveSync"] == "15.1"


async def test_authentication_refusals_carry_the_server_headers(
    gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    url = f"{gateway.url}{EAS}?Cmd=FolderSync&User=alice&DeviceId=NOAUTH01&DeviceType=T"
    async with session.post(url, headers={"MS-ASProtocolVersion": "14.1"}) as r:
        _assert_own(r, 401, "Unauthorized")
        assert r.headers["WWW-Authenticate"].startswith("Basic")
    doubled = [("Authorization", basic_auth("alice", "secret"))] * 2
    async with session.post(url, headers=[*doubled, ("MS-ASProtocolVersion", "14.1")]) as r:
        _assert_own(r, 400, "Bad Request")
