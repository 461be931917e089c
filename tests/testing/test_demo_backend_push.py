"""Long polls of the demo backend: Ping and Sync with Wait/HeartbeatInterval,
woken by injected mail, SendMail, heartbeats, newer requests and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest

from sentry.eas.status import PingStatus, SyncStatus
from sentry.testing.backend import BackendConfig, RunningBackend, start_backend
from sentry.testing.eas_client import EasResponse, EasTestClient

INBOX = "1"


def ping_xml(heartbeat: int | None = 30, folders: tuple[str, ...] = (INBOX,)) -> str:
    beat = "" if heartbeat is None else f"<HeartbeatInterval>{heartbeat}</HeartbeatInterval>"
    listed = "".join(f"<Folder><Id>{f}</Id><Class>Email</Class></Folder>" for f in folders)
    return f'<Ping xmlns="Ping">{beat}<Folders>{listed}</Folders></Ping>'


def sync_xml(key: str, extra: str = "") -> str:
    return (
        '<Sync xmlns="AirSync"><Collections><Collection>'
        f"<SyncKey>{key}</SyncKey><CollectionId>{INBOX}</CollectionId>"
        f"</Collection></Collections>{extra}</Sync>"
    )


def ping_status(r: EasResponse) -> int:
    return int(r.text("Status") or 0)


def changed_folders(r: EasResponse) -> list[str | None]:
    folders = r.element.find("Folders")
    return [] if folders is None else [f.text for f in folders.children]


@pytest.fixture
async def backend() -> AsyncIterator[RunningBackend]:
    async with start_backend(BackendConfig(min_heartbeat=1, max_ping_folders=3)) as b:
        yield b


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def device(
    backend: RunningBackend, session: aiohttp.ClientSession, user: str = "alice", n: int = 1
) -> EasTestClient:
    client = EasTestClient(session, backend.eas_url, user, "secret", device_id=f"{user}dev{n}")
    await client.provision()
    return client


async def synced_key(client: EasTestClient) -> str:
    first = await client.post("Sync", sync_xml("0"))
    key = first.text("Collections", "Collection", "SyncKey") or ""
    second = await client.post("Sync", sync_xml(key))
    return second.text("Collections", "Collection", "SyncKey") or ""


# --- Ping ---


async def test_held_ping_answers_status_2_on_injected_mail(
    backend: RunningBackend, session: aiohttp.ClientSession
) -> None:
    alice = await device(backend, session)
    async with asyncio.TaskGroup() as tg:
        held = tg.create_task(alice.post("Ping", ping_xml(folders=(INBOX, "4"))))
        await backend.wait_held()
        backend.inject_message("bob", "Not for alice", "x")  # another mailbox: no wake-up
        (waiter,) = backend.state.held_pings.values()  # delivery wakes waiters synchronously
        assert (waiter.event.is_set(), waiter.changed) == (False, [])
        backend.inject_message("alice", "For alice", "y")
    r = held.result()
    assert ping_status(r) == PingStatus.ChangesFound
    assert changed_folders(r) == [INBOX]
    assert backend.held == 0


async def test_ping_heartbeat_expiry_is_status_1(
    backend: RunningBackend, session: aiohttp.ClientSession
) -> None:
    alice = await device(backend, session)
    async with asyncio.TaskGroup() as tg:
        held = tg.create_task(alice.post("Ping", ping_xml(heartbeat=1)))
        await backend.wait_held()  # it was held, not answered at once
    assert ping_status(held.result()) == PingStatus.HeartbeatExpired
    assert backend.held == 0


async def test_empty_ping_reuses_the_cached_parameters(
    backend: RunningBackend, session: aiohttp.ClientSession
) -> None:
    alice = await device(backend, session)
    first = await alice.post("Ping", ping_xml(heartbeat=1))
    assert ping_status(first) == PingStatus.HeartbeatExpired
    async with asyncio.TaskGroup() as tg:
        held = tg.create_task(alice.post("Ping"))
        await backend.wait_held()
        backend.inject_message("alice", "Cached", "z")
    assert changed_folders(held.result()) == [INBOX]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (None, PingStatus.MissingParameters),
        (
            '<Ping xmlns="Ping"><HeartbeatInterval>30</HeartbeatInterval></Ping>',
            PingStatus.MissingParameters,
        ),
        (ping_xml(folders=("77",)), PingStatus.FolderSyncRequired),
        (ping_xml(folders=("1", "2", "3", "4")), PingStatus.TooManyFolders),
        (
            '<Ping xmlns="Ping"><HeartbeatInterval>soon</HeartbeatInterval></Ping>',
            PingStatus.SyntaxError,
        ),
    ],
)
async def test_ping_parameter_errors(
    backend: RunningBackend, session: aiohttp.ClientSession, body: str | None, expected: PingStatus
) -> None:
    alice = await device(backend, session)
    r = await alice.post("Ping", body)
    assert ping_status(r) == expected
    if expected == PingStatus.TooManyFolders:
        assert r.text("MaxFolders") == "3"


async def test_ping_heartbeat_out_of_range_is_status_5(session: aiohttp.ClientSession) -> None:
    async with start_backend(BackendConfig(min_heartbeat=60, max_heartbeat=3540)) as backend:
        alice = await device(backend, session)
        high = await alice.post("Ping", ping_xml(heartbeat=4000))
        assert (ping_status(high), high.text("HeartbeatInterval")) == (
            PingStatus.HeartbeatOutOfRange,
            "3540",
        )
        low = await alice.post("Ping", ping_xml(heartbeat=10))
        assert (ping_status(low), low.text("HeartbeatInterval")) == (
            PingStatus.HeartbeatOutOfRange,
            "60",
        )


async def test_ping_answers_at_once_when_a_synced_folder_changed(
    backend: RunningBackend, session: aiohttp.ClientSession
) -> None:
    alice = await device(backend, session)
    await synced_key(alice)
    backend.inject_message("alice", "While offline", "x")
    r = await alice.post("Ping", ping_xml(heartbeat=600))  # a wait would be a hang
    assert changed_folders(r) == [INBOX]


async def test_a_newer_ping_supersedes_the_held_one(
    backend: RunningBackend, session: aiohttp.ClientSession
) -> None:
    alice = await device(backend, session)
    async with asyncio.TaskGroup() as tg:
        first = tg.create_task(alice.post("Ping", ping_xml()))
        await backend.wait_held()
        second = tg.create_task(alice.post("Ping", ping_xml()))
        assert ping_status(await first) == PingStatus.HeartbeatExpired
        await backend.wait_held()
        backend.inject_message("alice", "Wake", "w")
    assert ping_status(second.result()) == PingStatus.ChangesFound


async def test_send_mail_wakes_the_recipients_ping(
    backend: RunningBackend, session: aiohttp.ClientSession
) -> None:
    alice, bob = await device(backend, session), await device(backend, session, "bob")
    mime = "To: Bob &lt;bob@example.com&gt;&#13;\nSubject: Ping me&#13;\n&#13;\nHello&#13;\n"
    async with asyncio.TaskGroup() as tg:
        held = tg.create_task(bob.post("Ping", ping_xml()))
        await backend.wait_held()
        sent = await alice.post(
            "SendMail",
            f'<SendMail xmlns="ComposeMail"><ClientId>1</ClientId><Mime>{mime}</Mime></SendMail>',
        )
        assert (sent.status, sent.raw) == (200, b"")
    assert changed_folders(held.result()) == [INBOX]
    assert list(backend.mailbox("bob").inbox.items.values())[-1].subject == "Ping me"


# --- Sync with Wait / HeartbeatInterval ---


async def test_held_sync_returns_the_new_item(
    backend: RunningBackend, session: aiohttp.ClientSession
) -> None:
    alice = await device(backend, session)
    key = await synced_key(alice)
    async with asyncio.TaskGroup() as tg:
        held = tg.create_task(alice.post("Sync", sync_xml(key, "<Wait>5</Wait>")))
        await backend.wait_held()
        server_id = backend.inject_message("alice", "Waited for", "w")
    r = held.result()
    assert r.text("Collections", "Collection", "Commands", "Add", "ServerId") == server_id


async def test_held_sync_expires_with_an_empty_response(
    backend: RunningBackend, session: aiohttp.ClientSession
) -> None:
    alice = await device(backend, session)
    key = await synced_key(alice)
    r = await alice.post("Sync", sync_xml(key, "<HeartbeatInterval>1</HeartbeatInterval>"))
    assert (r.status, r.raw) == (200, b"")


async def test_sync_wait_out_of_range_is_status_14(
    backend: RunningBackend, session: aiohttp.ClientSession
) -> None:
    alice = await device(backend, session)
    key = await synced_key(alice)
    r = await alice.post("Sync", sync_xml(key, "<Wait>60</Wait>"))
    assert (r.text("Status"), r.text("Limit")) == (
        str(SyncStatus.InvalidWaitOrHeartbeat.value),
        "59",
    )
    both = await alice.post(
        "Sync", sync_xml(key, "<Wait>1</Wait><HeartbeatInterval>60</HeartbeatInterval>")
    )
    assert both.text("Status") == str(SyncStatus.ProtocolError.value)


# --- Ending held requests ---


async def test_shutdown_ends_held_requests_at_once(session: aiohttp.ClientSession) -> None:
    backend = await start_backend(BackendConfig())
    alice = await device(backend, session)
    bob = await device(backend, session, "bob")
    key = await synced_key(bob)
    async with asyncio.TaskGroup() as tg:
        ping = tg.create_task(alice.post("Ping", ping_xml(heartbeat=600)))
        sync = tg.create_task(bob.post("Sync", sync_xml(key, "<Wait>10</Wait>")))
        await backend.wait_held(2)
        await backend.stop()  # a 600 s Ping and a 10 min Sync: answered by the stop
    assert ping_status(ping.result()) == PingStatus.HeartbeatExpired
    assert (sync.result().status, sync.result().raw) == (200, b"")
    await backend.stop()  # idempotent


async def test_a_client_that_goes_away_releases_its_ping(
    backend: RunningBackend, session: aiohttp.ClientSession
) -> None:
    alice = await device(backend, session)
    ping = asyncio.ensure_future(alice.post("Ping", ping_xml(heartbeat=600)))
    await backend.wait_held()
    ping.cancel()  # the client closes its connection
    with contextlib.suppress(asyncio.CancelledError):
        await ping
    async with asyncio.timeout(10):
        while backend.held:
            await asyncio.sleep(0.01)
    assert backend.abandoned == 1
