"""The seed's two procedures for giving a device a second mailbox, end to end:
an administrator using the admin API, a real EAS client (pyactivesync, over TLS,
in a worker thread) syncing through the gateway to the demo backend.

Push method: the device user's LDAP custom attributes name the extra account
(Custom 1 = its user name, Custom 2 = its email); an Exchange setting with
$USER_CUSTOM1$ / $USER_CUSTOM2$ is applied to a label and the device is put in
the label. The second mailbox then syncs with no further admin action, even
with auto-block on, because its association is linked.

Manual method: the user adds the account by hand; with auto-block on it is
refused (129) until an admin finds it in the list by user name and allows it.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from admin_support import Api, device, folder_sync_status
from pyactivesync import Client, FolderType
from pyactivesync.exceptions import EASError, StatusError

from sentry.testing.gateway import DemoGateway

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")


@pytest.fixture(autouse=True)
def _no_ca_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    # requests lets a CA bundle from the environment override verify=False.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


def pyas(gw: DemoGateway, user: str, device_id: str) -> Client:
    host = gw.url.removeprefix("https://")
    return Client(host, user, "secret", device_id=device_id, verify_ssl=False, timeout=15.0)


def sync_inbox(client: Client) -> list[str]:
    """Provision, FolderSync, and a full Inbox sync; the subjects received."""
    client.provision()
    inbox = next(f for f in client.list_folders() if f.type == FolderType.INBOX)
    first = client.sync_folder(inbox.id)
    return [i.fields["Email.Subject"] for i in client.sync_folder(inbox.id, first.sync_key).added]


async def test_push_method_second_mailbox_needs_no_admin_action(
    api: Api, gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    # LDAP: extensionAttribute1/2 of the device user mapped to Custom 1 / Custom 2.
    alice = {"email": "alice@example.com", "source": "ldap", "custom1": "shared"}
    await api.ok("PUT", "/api/users/alice", alice | {"custom2": "shared@example.com"})
    await api.ok("PUT", "/api/users/shared", {"email": "shared@example.com", "source": "ldap"})
    setting = {"user_name": "$USER_CUSTOM1$", "email": "$USER_CUSTOM2$", "note": "2nd mailbox"}
    await api.ok("PUT", "/api/exchange-settings/second-mailbox", setting)
    await api.ok("PUT", "/api/labels/second-mailbox", {"settings": ["second-mailbox"]})
    phone = {"id": "alice-iphone", "owner": "alice", "eas_device_ids": ["PUSHPHONE01"]}
    await api.ok("POST", "/api/devices", phone, status=201)
    await api.ok("PUT", "/api/devices/alice-iphone/labels", {"labels": ["second-mailbox"]})
    await api.ok("PUT", "/api/preferences", {"auto_block_unregistered": True})
    detail = await api.ok("GET", "/api/devices/alice-iphone")
    assert detail["pushed"] == [
        {"setting": "second-mailbox", "user_name": "shared", "email": "shared@example.com"}
        | {"principal": "shared"}
    ]
    assert detail["push_errors"] == []
    audit_before = (await api.ok("GET", "/api/audit"))["total"]

    with pyas(gateway, "shared", "PUSHPHONE01") as client:  # the pushed account
        subjects = await asyncio.to_thread(sync_inbox, client)
    assert subjects, "the pushed mailbox synced no messages"
    with pyas(gateway, "alice", "PUSHPHONE01") as client:  # the device user's own
        assert await asyncio.to_thread(sync_inbox, client)

    row = await api.ok("GET", "/api/associations/PUSHPHONE01/shared")
    assert (row["state"], row["linked"], row["device"]) == ("allowed", True, "alice-iphone")
    assert row["override"] is None and row["reasons"] == []
    assert (await api.ok("GET", "/api/audit"))["total"] == audit_before  # no admin action
    # The same account on a phone outside the label is not entitled: auto-blocked.
    other = device(gateway, session, "shared", "OTHERPHONE1")
    assert await folder_sync_status(other) == "129"
    row = await api.ok("GET", "/api/associations/OTHERPHONE1/shared")
    assert (row["reasons"], row["unlinked"]) == (["AUTO_BLOCK"], "device_unknown")


async def test_manual_method_refused_until_an_admin_allows(api: Api, gateway: DemoGateway) -> None:
    await api.ok("PUT", "/api/preferences", {"auto_block_unregistered": True, "note": "policy"})
    with pyas(gateway, "bob", "MANUALPHONE1") as client:
        with pytest.raises(StatusError) as refused:
            await asyncio.to_thread(client.provision)
        assert refused.value.code == "129"

        found = await api.ok("GET", "/api/associations?user=Bo")  # search by user name
        assert [(r["device_id"], r["user"]) for r in found["items"]] == [("MANUALPHONE1", "bob")]
        row = found["items"][0]
        assert (row["state"], row["reasons"], row["linked"]) == ("blocked", ["AUTO_BLOCK"], False)
        await api.ok("POST", "/api/associations/MANUALPHONE1/bob/allow", {"note": "user called"})

        subjects = await asyncio.to_thread(sync_inbox, client)
        assert subjects
    row = await api.ok("GET", "/api/associations/MANUALPHONE1/bob")
    assert (row["state"], row["reasons"]) == ("allowed", ["MANUAL", "AUTO_BLOCK"])
    assert row["override"]["note"] == "user called"
    assert (await api.ok("GET", "/api/audit"))["items"][0]["action"] == "allow"
    with pyas(gateway, "bob", "MANUALPHONE2") as other, pytest.raises(EASError):
        await asyncio.to_thread(other.provision)  # the allow is per (device, user)
