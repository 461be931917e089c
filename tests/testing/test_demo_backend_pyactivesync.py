"""Interoperability: the third-party ``pyactivesync`` client (EAS 16.1, requests,
synchronous) against the demo backend over TLS.

The client only speaks https to ``/Microsoft-Server-ActiveSync``, so the backend
serves a self-signed certificate; its calls run in worker threads while the
backend runs on the test's event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from pyactivesync import Client, FolderType

from sentry.certs import make_self_signed, server_ssl_context, write_pair
from sentry.testing.backend import BackendConfig, RunningBackend, start_backend
from sentry.testing.mailbox import FolderType as MailFolderType

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")


@pytest.fixture
async def tls_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[RunningBackend]:
    # requests lets a CA bundle from the environment override verify=False
    # (psf/requests#3829); without these the client would verify after all.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    write_pair(make_self_signed("localhost"), cert, key)
    async with start_backend(BackendConfig(), ssl_context=server_ssl_context(cert, key)) as b:
        yield b


def _client(backend: RunningBackend, user: str, device_id: str) -> Client:
    return Client(
        f"127.0.0.1:{backend.port}",
        user,
        "secret",
        device_id=device_id,
        verify_ssl=False,
        timeout=10.0,
    )


async def test_provision_folders_sync_fetch_estimate(tls_backend: RunningBackend) -> None:
    with _client(tls_backend, "alice", "PYAS0001") as client:
        key = await asyncio.to_thread(client.provision)
        assert key.isdigit()
        info = tls_backend.device_info("alice", "PYAS0001")
        assert info is not None and info["Model"] == "pyactivesync"

        folders = await asyncio.to_thread(client.list_folders)
        by_type = {f.type: f for f in folders}
        assert {FolderType.INBOX, FolderType.SENT_ITEMS, FolderType.DRAFTS} <= set(by_type)
        inbox = by_type[FolderType.INBOX]

        first = await asyncio.to_thread(client.sync_folder, inbox.id)
        assert first.added == [] and first.sync_key != "0"
        second = await asyncio.to_thread(client.sync_folder, inbox.id, first.sync_key)
        subjects = {item.fields["Email.Subject"] for item in second.added}
        assert subjects == {f"Welcome message {n}" for n in (1, 2, 3)}

        estimate = await asyncio.to_thread(client.get_item_estimate, inbox.id, second.sync_key)
        assert estimate == 0

        item = await asyncio.to_thread(client.fetch_item, inbox.id, second.added[0].server_id)
        assert item.body is not None and "seeded message" in str(item.body.data)


async def test_ping_returns_the_changed_folder(tls_backend: RunningBackend) -> None:
    with _client(tls_backend, "alice", "PYAS0002") as client:
        await asyncio.to_thread(client.provision)
        inbox = "1"
        first = await asyncio.to_thread(client.sync_folder, inbox)
        synced = await asyncio.to_thread(client.sync_folder, inbox, first.sync_key)

        async with asyncio.TaskGroup() as tg:
            ping = tg.create_task(asyncio.to_thread(client.ping, inbox, heartbeat=30))
            await tls_backend.wait_held()
            tls_backend.inject_message("alice", "Pushed", "Hello by push")
        result = ping.result()
        assert result.status == "2"
        assert result.changed_folder_ids == [inbox]

        after = await asyncio.to_thread(client.sync_folder, inbox, synced.sync_key)
        assert [i.fields["Email.Subject"] for i in after.added] == ["Pushed"]


async def test_send_mail_reaches_the_other_mailbox(tls_backend: RunningBackend) -> None:
    message = EmailMessage()
    message["From"] = "alice@example.com"
    message["To"] = "Bob Example <bob@example.com>"
    message["Subject"] = "Lunch?"
    message.set_content("Noon at the usual place.")
    with _client(tls_backend, "alice", "PYAS0003") as client:
        await asyncio.to_thread(client.provision)
        await asyncio.to_thread(client.send_mail, message)

    bob = tls_backend.mailbox("bob")
    assert [m.subject for m in bob.inbox.items.values()][-1] == "Lunch?"
    delivered = list(bob.inbox.items.values())[-1]
    assert "Noon at the usual place." in delivered.body
    alice_sent = tls_backend.mailbox("alice").folder(MailFolderType.SentItems)
    assert [m.subject for m in alice_sent.items.values()] == ["Lunch?"]
