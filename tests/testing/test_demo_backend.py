"""The demo backend at the protocol level: HTTP basics, provisioning, folders,
Sync, items and the control API, driven with raw EAS requests."""

from __future__ import annotations

import base64
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from sentry.eas.status import (
    CommonStatus,
    FolderStatus,
    PolicyStatus,
    ProvisionStatus,
    SettingsStatus,
    SyncStatus,
)
from sentry.proxy.connections import BACKLOG
from sentry.testing.backend import BackendConfig, RunningBackend, build_backend_app, start_backend
from sentry.testing.eas_client import EasResponse, EasTestClient, basic_auth
from sentry.testing.eas_folders import EstimateStatus
from sentry.testing.eas_items import ItemOperationsStatus
from sentry.testing.mailbox import FolderType

FOLDERSYNC_0 = '<FolderSync xmlns="FolderHierarchy"><SyncKey>0</SyncKey></FolderSync>'
FOLDERSYNC_142 = bytes.fromhex("03 01 6A 00 00 07 56 4C 03 31 34 32 00 01 01")  # §7 vector 5
INBOX = "1"
OK = str(FolderStatus.Success.value)


def sync_xml(key: str, collection: str = INBOX, extra: str = "") -> str:
    return (
        '<Sync xmlns="AirSync"><Collections><Collection>'
        f"<SyncKey>{key}</SyncKey><CollectionId>{collection}</CollectionId>{extra}"
        "</Collection></Collections></Sync>"
    )


@pytest.fixture
async def backend() -> AsyncIterator[RunningBackend]:
    async with start_backend(BackendConfig(min_heartbeat=1)) as b:
        yield b


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def alice(backend: RunningBackend, session: aiohttp.ClientSession) -> EasTestClient:
    return EasTestClient(session, backend.eas_url, "alice", "secret", device_id="ALICEPHONE1")


@pytest.fixture
async def provisioned(alice: EasTestClient) -> EasTestClient:
    await alice.provision()
    return alice


def sync_key(r: EasResponse) -> str | None:
    return r.text("Collections", "Collection", "SyncKey")


async def synced_inbox(client: EasTestClient) -> str:
    """Sync the Inbox to the end; return the current key."""
    key = (await client.post("Sync", sync_xml("0"))).text("Collections", "Collection", "SyncKey")
    assert key is not None
    r = await client.post("Sync", sync_xml(key))
    new_key = r.text("Collections", "Collection", "SyncKey")
    assert new_key is not None
    return new_key


# --- HTTP layer ---


async def test_options_lists_versions_and_commands_without_credentials(
    backend: RunningBackend, session: aiohttp.ClientSession
) -> None:
    async with session.options(backend.eas_url) as resp:
        assert resp.status == 200
        assert resp.headers["MS-ASProtocolVersions"] == "2.5,12.0,12.1,14.0,14.1,16.0,16.1"
        assert "FolderSync" in resp.headers["MS-ASProtocolCommands"].split(",")
        assert resp.headers["Allow"] == resp.headers["Public"] == "OPTIONS,POST"
        assert resp.headers["MS-Server-ActiveSync"] == "15.1"
        assert resp.headers["X-Demo-Backend-Type"] == "exchange"
        assert await resp.read() == b""


@pytest.mark.parametrize("password", [None, "wrong"])
async def test_post_without_valid_credentials_is_401(
    backend: RunningBackend, session: aiohttp.ClientSession, password: str | None
) -> None:
    headers = {} if password is None else {"Authorization": basic_auth("alice", password)}
    query = {"Cmd": "FolderSync", "User": "alice", "DeviceId": "X1", "DeviceType": "T"}
    async with session.post(backend.eas_url, params=query, headers=headers) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Basic")


async def test_login_by_email_and_lowercase_path(
    backend: RunningBackend, session: aiohttp.ClientSession
) -> None:
    url = backend.url + "/microsoft-server-activesync"
    client = EasTestClient(session, url, "Alice@Example.com", "secret")
    assert (await client.post("FolderSync", FOLDERSYNC_0)).raw == FOLDERSYNC_142
    async with session.post(backend.url + "/elsewhere") as resp:
        assert resp.status == 404


async def test_get_is_501(backend: RunningBackend, session: aiohttp.ClientSession) -> None:
    async with session.get(backend.eas_url) as resp:
        assert resp.status == 501


async def test_malformed_wbxml_is_400(provisioned: EasTestClient) -> None:
    r = await provisioned.post("FolderSync", bytes.fromhex("03 01 6A 00 00 07 56"))
    assert r.status == 400


async def test_bad_query_is_400(backend: RunningBackend, session: aiohttp.ClientSession) -> None:
    client = EasTestClient(session, backend.eas_url, "alice", "secret", device_id="bad id!")
    assert (await client.post("FolderSync", FOLDERSYNC_0)).status == 400


async def test_base64_query_form_is_understood(provisioned: EasTestClient) -> None:
    device = provisioned.device_id.encode()
    key = (provisioned.policy_key or 0).to_bytes(4, "little")
    blob = bytes([161, 9, 0x09, 0x04, len(device)]) + device + b"\x04" + key + b"\x02TP"
    query = base64.b64encode(blob).decode()
    async with provisioned.session.post(
        f"{provisioned.url}?{query}",
        data=bytes.fromhex("03016A00000756520330000101"),
        headers={"Authorization": basic_auth("alice", "secret")},
    ) as resp:
        assert resp.status == 200
        assert b"Inbox" in await resp.read()


# --- Provisioning ---


async def test_foldersync_before_provision_is_142_exactly(alice: EasTestClient) -> None:
    r = await alice.post("FolderSync", FOLDERSYNC_0)
    assert (r.status, r.raw) == (200, FOLDERSYNC_142)
    assert r.headers["Content-Type"] == "application/vnd.ms-sync.wbxml"


async def test_foldersync_before_provision_is_449_for_12_1(alice: EasTestClient) -> None:
    alice.version = "12.1"
    r = await alice.post("FolderSync", FOLDERSYNC_0)
    assert (r.status, r.raw) == (449, b"")


async def test_stale_policy_key_is_144(provisioned: EasTestClient) -> None:
    provisioned.policy_key = (provisioned.policy_key or 0) + 1
    r = await provisioned.post("FolderSync", FOLDERSYNC_0)
    assert r.text("Status") == str(CommonStatus.InvalidPolicyKey.value)


async def test_provision_is_two_phase(backend: RunningBackend, alice: EasTestClient) -> None:
    initial = await alice.post(
        "Provision",
        '<Provision xmlns="Provision"><DeviceInformation xmlns="Settings"><Set>'
        "<Model>Pixel 9</Model><OS>Android 15</OS></Set></DeviceInformation>"
        "<Policies><Policy><PolicyType>MS-EAS-Provisioning-WBXML</PolicyType></Policy>"
        "</Policies></Provision>",
    )
    root = initial.element
    assert [c.tag for c in root.children] == ["DeviceInformation", "Status", "Policies"]
    assert root.child_text("Status") == str(ProvisionStatus.Success.value)
    policy = root.find_path("Policies", "Policy")
    assert policy is not None
    assert policy.child_text("Status") == str(PolicyStatus.Success.value)
    doc = policy.find_path("Data", "EASProvisionDoc")
    assert doc is not None and doc.child_text("DevicePasswordEnabled") == "0"
    assert doc.child_text("AllowSimpleDevicePassword") == "1"
    temporary = policy.child_text("PolicyKey")
    assert backend.device_info("alice", "alicephone1") == {"Model": "Pixel 9", "OS": "Android 15"}

    ack = await alice.post(
        "Provision",
        '<Provision xmlns="Provision"><Policies><Policy>'
        "<PolicyType>MS-EAS-Provisioning-WBXML</PolicyType>"
        f"<PolicyKey>{temporary}</PolicyKey><Status>1</Status></Policy></Policies></Provision>",
    )
    final = ack.text("Policies", "Policy", "PolicyKey")
    assert final is not None and final != temporary
    alice.policy_key = int(temporary or 0)
    assert (await alice.post("FolderSync", FOLDERSYNC_0)).raw == FOLDERSYNC_142.replace(
        b"142", str(CommonStatus.InvalidPolicyKey.value).encode()
    )
    alice.policy_key = int(final)
    assert (await alice.post("FolderSync", FOLDERSYNC_0)).text("Status") == OK


async def test_provision_at_14_1_requires_device_information(alice: EasTestClient) -> None:
    with pytest.raises(AssertionError):
        await alice.provision(device_info=None)
    r = await alice.post(
        "Provision",
        '<Provision xmlns="Provision"><Policies><Policy>'
        "<PolicyType>MS-EAS-Provisioning-WBXML</PolicyType></Policy></Policies></Provision>",
    )
    assert r.text("Status") == str(CommonStatus.DeviceInformationRequired.value)
    alice.version = "14.0"
    assert await alice.provision(device_info=None) > 0


async def test_acknowledging_a_wrong_key_is_policy_status_5(alice: EasTestClient) -> None:
    r = await alice.post(
        "Provision",
        '<Provision xmlns="Provision"><Policies><Policy>'
        "<PolicyType>MS-EAS-Provisioning-WBXML</PolicyType>"
        "<PolicyKey>12345</PolicyKey><Status>1</Status></Policy></Policies></Provision>",
    )
    assert r.text("Policies", "Policy", "Status") == str(PolicyStatus.WrongPolicyKey.value)


async def test_provisioning_can_be_switched_off(session: aiohttp.ClientSession) -> None:
    async with start_backend(BackendConfig(require_provisioning=False)) as b:
        client = EasTestClient(session, b.eas_url, "bob", "secret")
        assert (await client.post("FolderSync", FOLDERSYNC_0)).text("Status") == OK


# --- FolderSync, Sync, GetItemEstimate ---


async def test_foldersync_hierarchy_then_no_changes(provisioned: EasTestClient) -> None:
    r = await provisioned.post("FolderSync", FOLDERSYNC_0)
    adds = r.element.find("Changes")
    assert adds is not None
    types = {a.child_text("DisplayName"): a.child_text("Type") for a in adds.iter_children("Add")}
    assert types == {
        "Inbox": "2",
        "Drafts": "3",
        "Deleted Items": "4",
        "Sent Items": "5",
        "Calendar": "8",
        "Contacts": "9",
    }
    key = r.text("SyncKey")
    again = await provisioned.post(
        "FolderSync", FOLDERSYNC_0.replace("<SyncKey>0<", f"<SyncKey>{key}<")
    )
    assert again.text("SyncKey") == key and again.text("Changes", "Count") == "0"
    bad = await provisioned.post("FolderSync", FOLDERSYNC_0.replace(">0<", ">999<"))
    assert bad.text("Status") == str(FolderStatus.InvalidSyncKey.value)


async def test_sync_initial_key_then_items_in_windows(provisioned: EasTestClient) -> None:
    first = await provisioned.post("Sync", sync_xml("0"))
    collection = first.element.find_path("Collections", "Collection")
    assert collection is not None and collection.find("Commands") is None
    key = collection.child_text("SyncKey")
    assert key not in (None, "0")

    page = await provisioned.post("Sync", sync_xml(str(key), extra="<WindowSize>2</WindowSize>"))
    collection = page.element.find_path("Collections", "Collection")
    assert collection is not None and collection.find("MoreAvailable") is not None
    commands = collection.find("Commands")
    assert commands is not None and len(commands.children) == 2
    add = commands.children[0]
    data = add.find("ApplicationData")
    assert data is not None
    assert data.child_text("Subject") == "Welcome message 3"
    assert data.child_text("MessageClass") == "IPM.Note"
    assert data.child_text("Read") == "0"
    assert {"To", "From", "DateReceived", "DisplayTo"} <= {c.tag for c in data.children}
    body = data.find("Body", "AirSyncBase")
    assert body is not None and body.child_text("Type") == "1"
    assert int(body.child_text("EstimatedDataSize") or 0) == len(body.child_text("Data") or "")

    rest = await provisioned.post("Sync", sync_xml(str(collection.child_text("SyncKey"))))
    collection = rest.element.find_path("Collections", "Collection")
    assert collection is not None and collection.find("MoreAvailable") is None
    commands = collection.find("Commands")
    assert commands is not None and len(commands.children) == 1


async def test_sync_sends_only_changes(backend: RunningBackend, provisioned: EasTestClient) -> None:
    key = await synced_inbox(provisioned)
    idle = await provisioned.post("Sync", sync_xml(key))
    assert idle.text("Collections", "Collection", "SyncKey") == key
    assert idle.element.find_path("Collections", "Collection", "Commands") is None

    server_id = backend.inject_message("alice", "Fresh", "news")
    r = await provisioned.post("Sync", sync_xml(key))
    adds = r.element.find_path("Collections", "Collection", "Commands")
    assert adds is not None
    assert [a.child_text("ServerId") for a in adds.children] == [server_id]


async def test_sync_truncates_html_bodies(provisioned: EasTestClient) -> None:
    key = sync_key(await provisioned.post("Sync", sync_xml("0")))
    options = (
        '<Options><BodyPreference xmlns="AirSyncBase"><Type>2</Type>'
        "<TruncationSize>20</TruncationSize></BodyPreference></Options>"
    )
    r = await provisioned.post("Sync", sync_xml(str(key), extra=options))
    body = r.element.find_path("Collections", "Collection", "Commands", "Add", "ApplicationData")
    assert body is not None
    node = body.find("Body", "AirSyncBase")
    assert node is not None
    assert node.child_text("Type") == "2" and node.child_text("Truncated") == "1"
    assert (node.child_text("Data") or "").startswith("<html>")
    assert len(node.child_text("Data") or "") == 20


async def test_sync_errors(provisioned: EasTestClient) -> None:
    empty = await provisioned.post("Sync")  # nothing cached yet
    assert empty.text("Status") == str(SyncStatus.RequestIncomplete.value)
    bad_key = await provisioned.post("Sync", sync_xml("77"))
    assert bad_key.text("Collections", "Collection", "Status") == str(SyncStatus.InvalidSyncKey)
    bad_folder = await provisioned.post("Sync", sync_xml("0", collection="99"))
    assert bad_folder.text("Collections", "Collection", "Status") == str(
        SyncStatus.FolderHierarchyChanged.value
    )


async def test_client_changes_apply_and_are_not_echoed(
    backend: RunningBackend, provisioned: EasTestClient
) -> None:
    key = await synced_inbox(provisioned)
    commands = (
        '<Commands><Change><ServerId>1:1</ServerId><ApplicationData><Read xmlns="Email">1</Read>'
        "</ApplicationData></Change><Delete><ServerId>1:2</ServerId></Delete>"
        "<Delete><ServerId>1:99</ServerId></Delete></Commands>"
    )
    r = await provisioned.post("Sync", sync_xml(key, extra=commands))
    collection = r.element.find_path("Collections", "Collection")
    assert collection is not None and collection.find("Commands") is None
    responses = collection.find("Responses")
    assert responses is not None
    assert [(c.tag, c.child_text("Status")) for c in responses.children] == [
        ("Delete", str(SyncStatus.ObjectNotFound.value))
    ]
    box = backend.mailbox("alice")
    assert box.inbox.items["1:1"].read and "1:2" not in box.inbox.items
    trash = box.folder(FolderType.DeletedItems).items.values()
    assert [m.subject for m in trash] == ["Welcome message 2"]


async def test_empty_sync_reuses_the_last_request(
    backend: RunningBackend, provisioned: EasTestClient
) -> None:
    await synced_inbox(provisioned)
    server_id = backend.inject_message("alice", "Again", "body")
    r = await provisioned.post("Sync")
    assert r.text("Collections", "Collection", "Commands", "Add", "ServerId") == server_id


async def test_get_item_estimate(backend: RunningBackend, provisioned: EasTestClient) -> None:
    key = sync_key(await provisioned.post("Sync", sync_xml("0")))
    request = (
        '<GetItemEstimate xmlns="GetItemEstimate"><Collections><Collection>'
        f'<SyncKey xmlns="AirSync">{key}</SyncKey><CollectionId>1</CollectionId>'
        "</Collection></Collections></GetItemEstimate>"
    )
    r = await provisioned.post("GetItemEstimate", request)
    assert r.text("Response", "Status") == str(EstimateStatus.Success.value)
    assert r.text("Response", "Collection", "Estimate") == "3"
    unknown = await provisioned.post("GetItemEstimate", request.replace(">1</Coll", ">42</Coll"))
    assert unknown.text("Response", "Status") == str(EstimateStatus.InvalidCollection.value)


# --- Items, mail, settings ---


async def test_item_operations_fetch(provisioned: EasTestClient) -> None:
    def fetch(server_id: str) -> str:
        return (
            '<ItemOperations xmlns="ItemOperations"><Fetch><Store>Mailbox</Store>'
            f'<CollectionId xmlns="AirSync">1</CollectionId><ServerId xmlns="AirSync">{server_id}'
            '</ServerId><Options><BodyPreference xmlns="AirSyncBase"><Type>1</Type>'
            "</BodyPreference></Options></Fetch></ItemOperations>"
        )

    r = await provisioned.post("ItemOperations", fetch("1:2"))
    assert r.text("Status") == str(ItemOperationsStatus.Success.value)
    fetched = r.element.find_path("Response", "Fetch")
    assert fetched is not None
    assert fetched.child_text("Status") == str(ItemOperationsStatus.Success.value)
    properties = fetched.find("Properties")
    assert properties is not None
    assert properties.child_text("Subject") == "Welcome message 2"
    data = properties.find_path("Body", "Data")
    assert data is not None and "seeded message 2" in (data.text or "")
    missing = await provisioned.post("ItemOperations", fetch("1:404"))
    assert missing.text("Response", "Fetch", "Status") == str(
        ItemOperationsStatus.ObjectNotFound.value
    )


async def test_send_mail_stores_and_delivers(
    backend: RunningBackend, provisioned: EasTestClient
) -> None:
    mime = (
        b"From: alice@example.com\r\nTo: bob@example.com, someone@elsewhere.test\r\n"
        b"Subject: Hi Bob\r\n\r\nSee you.\r\n"
    )
    r = await provisioned.post(
        "SendMail",
        f'<SendMail xmlns="ComposeMail"><ClientId>c1</ClientId><SaveInSentItems/>'
        f'<Mime><opaque xmlns="urn:x-sentry:wbxml">{base64.b64encode(mime).decode()}</opaque>'
        "</Mime></SendMail>",
    )
    assert (r.status, r.raw) == (200, b"")
    bob_inbox = list(backend.mailbox("bob").inbox.items.values())
    assert (bob_inbox[-1].subject, bob_inbox[-1].body.strip()) == ("Hi Bob", "See you.")
    sent = backend.mailbox("alice").folder(FolderType.SentItems).items.values()
    assert [m.subject for m in sent] == ["Hi Bob"]

    no_rcpt = await provisioned.post(
        "SendMail",
        '<SendMail xmlns="ComposeMail"><ClientId>c2</ClientId><Mime>Subject: x\r\n\r\nx</Mime>'
        "</SendMail>",
    )
    assert no_rcpt.text("Status") == str(CommonStatus.MessageHasNoRecipient.value)


async def test_send_mail_before_14_is_raw_mime(
    backend: RunningBackend, provisioned: EasTestClient
) -> None:
    provisioned.version = "12.1"
    async with provisioned.session.post(
        provisioned.url,
        params={
            "Cmd": "SendMail",
            "User": "alice",
            "DeviceId": provisioned.device_id,
            "DeviceType": "T",
            "SaveInSent": "F",
        },
        data=b"To: bob@example.com\r\nSubject: Old school\r\n\r\nHi\r\n",
        headers={
            "Authorization": basic_auth("alice", "secret"),
            "MS-ASProtocolVersion": "12.1",
            "Content-Type": "message/rfc822",
            "X-MS-PolicyKey": str(provisioned.policy_key),
        },
    ) as resp:
        assert resp.status == 200
    assert list(backend.mailbox("bob").inbox.items.values())[-1].subject == "Old school"
    assert not backend.mailbox("alice").folder(FolderType.SentItems).items


async def test_settings(backend: RunningBackend, provisioned: EasTestClient) -> None:
    r = await provisioned.post(
        "Settings",
        '<Settings xmlns="Settings"><Oof><Get><BodyType>Text</BodyType></Get></Oof>'
        "<DeviceInformation><Set><Model>iPhone15,2</Model><FriendlyName>Work</FriendlyName>"
        "</Set></DeviceInformation><UserInformation><Get/></UserInformation></Settings>",
    )
    ok = str(SettingsStatus.Success.value)
    assert r.text("Status") == ok
    assert r.text("Oof", "Status") == ok and r.text("Oof", "Get", "OofState") == "0"
    assert r.text("DeviceInformation", "Status") == ok
    assert (
        r.text(
            "UserInformation", "Get", "Accounts", "Account", "EmailAddresses", "PrimarySmtpAddress"
        )
        == "alice@example.com"
    )
    assert backend.device_info("alice", provisioned.device_id) == {
        "Model": "iPhone15,2",
        "FriendlyName": "Work",
    }


async def test_unsupported_commands(provisioned: EasTestClient) -> None:
    r = await provisioned.post("Search", '<Search xmlns="Search"/>')
    assert (r.status, r.text("Status")) == (200, str(CommonStatus.CommandNotSupported.value))
    assert r.element.namespace == "Search"
    provisioned.version = "12.1"
    assert (await provisioned.post("MoveItems", '<MoveItems xmlns="Move"/>')).status == 501


# --- Control API and counters ---


async def test_control_endpoints_and_counters(
    backend: RunningBackend, session: aiohttp.ClientSession, provisioned: EasTestClient
) -> None:
    await provisioned.post("FolderSync", FOLDERSYNC_0)
    payload = {"user": "bob", "subject": "From curl", "body": "hi"}
    async with session.post(backend.url + "/_demo/inject", json=payload) as resp:
        assert resp.status == 200
        assert (await resp.json())["server_id"].startswith("1:")
    async with session.post(backend.url + "/_demo/inject", json={"user": "nobody"}) as resp:
        assert resp.status == 400
    async with session.get(backend.url + "/_demo/stats") as resp:
        stats = await resp.json()
    assert stats["backend_type"] == "exchange"
    assert stats["by_command"] == {"Provision": 2, "FolderSync": 1}
    assert backend.stats.requests[("alice", "FolderSync")] == 1
    assert [m.subject for m in backend.mailbox("bob").inbox.items.values()][-1] == "From curl"


async def test_backend_type_is_exposed(session: aiohttp.ClientSession) -> None:
    async with start_backend(BackendConfig(backend_type="gmail")) as b:
        client = EasTestClient(session, b.eas_url, "alice", "secret")
        r = await client.post("FolderSync", FOLDERSYNC_0)
        assert r.headers["X-Demo-Backend-Type"] == "gmail"
        assert r.headers["MS-Server-ActiveSync"] == "14.0"
        assert b.stats.backend_type == "gmail"


async def test_app_works_with_aiohttp_client(aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(build_backend_app(BackendConfig()))
    resp = await client.options("/Microsoft-Server-ActiveSync")
    assert resp.status == 200


async def test_the_backend_queues_a_storm_of_connections(backend: RunningBackend) -> None:
    """Its listener's accept queue is the gateway's (4,096, as far as
    ``net.core.somaxconn`` allows), not aiohttp's 128: a reconnect storm's
    upstream connections all arrive at once. ``ss`` shows a listener's backlog
    as its Send-Q."""
    if shutil.which("ss") is None:
        pytest.skip("ss (iproute2) is not installed")
    shown = subprocess.run(
        ["ss", "-ltnH", f"sport = :{backend.port}"], capture_output=True, text=True, check=True
    ).stdout.split()
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    assert shown[0] == "LISTEN" and int(shown[2]) == min(BACKLOG, somaxconn)
    assert BACKLOG == 4096
