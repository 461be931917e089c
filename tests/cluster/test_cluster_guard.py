"""The write guard and the follower, deterministically, with two gateways in
one process on one PostgreSQL database (the real-process tests are in
``test_cluster_nodes``): a node that missed another node's change never
writes on its stale state; it absorbs what it missed and decides again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import pytest
from structlog.testing import capture_logs

from sentry.cluster import follower as follower_module
from sentry.model import Association, AssociationKey, Verdict
from sentry.policy import block
from sentry.policy import changes as ch
from sentry.store.feed import REBUILD, FeedBehind
from sentry.store.postgres import PostgresStore
from sentry.testing.eas_client import EasTestClient, ProvisionFailed
from sentry.testing.gateway import DEMO_ROUTING, DemoGateway, demo_gateway, demo_pools
from sentry.testing.postgres import ThrowawayServer

PING = (
    '<Ping xmlns="Ping"><HeartbeatInterval>600</HeartbeatInterval><Folders><Folder>'
    "<Id>1</Id><Class>Email</Class></Folder></Folders></Ping>"
)


FOLDER_SYNC = '<FolderSync xmlns="FolderHierarchy"><SyncKey>0</SyncKey></FolderSync>'


def _put(i: int) -> tuple[ch.Change, ...]:
    row = Association(AssociationKey(f"G{i}", f"u{i}"), "iPhone", first_seen=1.0)
    return (ch.PutAssociation(row),)


async def test_a_guarded_write_behind_the_feed_writes_nothing(pg_dsn: str) -> None:
    a = await PostgresStore.open(pg_dsn, node="a", prune=False)
    b = await PostgresStore.open(pg_dsn, node="b", prune=False)
    try:
        a.view = b.view = await a.head()
        first = await a.apply_seq(_put(1))
        assert a.view == first
        with pytest.raises(FeedBehind) as caught:
            await b.apply(_put(2))
        assert caught.value.missed is not None
        assert [(e.seq, e.node, e.changes) for e in caught.value.missed] == [(first, "a", _put(1))]
        assert await a.head() == first and len(await a.load()) == 1  # b wrote nothing
        # last-seen times need no guard; b's view moves on once it applied a's row
        await b.apply((ch.Touch(AssociationKey("G1", "u1"), 5.0),))
        b.view = await b.head()
        assert await b.apply_seq(_put(2)) == b.view
    finally:
        await a.close()
        await b.close()


async def test_a_writer_decides_again_inside_the_transaction(pg_dsn: str) -> None:
    a = await PostgresStore.open(pg_dsn, node="a", prune=False)
    b = await PostgresStore.open(pg_dsn, node="b", prune=False)
    seen: list[FeedBehind] = []

    def again(exc: FeedBehind) -> tuple[ch.Change, ...]:
        seen.append(exc)
        b.view = exc.head  # what the node's follower does when it takes the rows
        return _put(3)

    try:
        a.view = b.view = await a.head()
        first = await a.apply_seq(_put(1))
        token = REBUILD.set(again)
        try:
            second = await b.apply_seq(_put(2))
        finally:
            REBUILD.reset(token)
        assert [e.seq for e in seen[0].missed or ()] == [first]
        assert second is not None and b.view == second
        loaded = await a.load()
        assert sorted(k.device_id for k in loaded.keys()) == ["G1", "G3"]  # noqa: SIM118
        assert [e.changes for e in await a.changes_since(first)] == [_put(3)]
    finally:
        await a.close()
        await b.close()


@pytest.fixture
async def two_nodes(tmp_path: Path, pg_dsn: str) -> AsyncIterator[tuple[DemoGateway, DemoGateway]]:
    store = {"kind": "postgresql", "dsn": pg_dsn, "feed_poll_seconds": 0.2}
    prefs = {"max_devices_per_mailbox": 1}
    async with AsyncExitStack() as stack:
        nodes = []
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            gw = await stack.enter_async_context(
                demo_gateway(
                    tmp_path / name,
                    demo_pools(),
                    routing=DEMO_ROUTING,
                    store=store,
                    preferences=prefs,
                )
            )
            nodes.append(gw)
        yield nodes[0], nodes[1]


def _client(
    session: aiohttp.ClientSession, gw: DemoGateway, user: str, device: str
) -> EasTestClient:
    return EasTestClient(
        session, f"{gw.url}/Microsoft-Server-ActiveSync", user, "secret", device_id=device
    )


async def test_a_stale_node_decides_a_first_sight_again_on_the_latest_state(
    two_nodes: tuple[DemoGateway, DemoGateway],
) -> None:
    a, b = two_nodes
    assert b.gateway.follower is not None
    await b.gateway.follower.stop_following()  # b hears nothing from now on
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as session:
        await _client(session, a, "bob", "GUARDA").provision()
        assert AssociationKey("GUARDA", "bob") not in b.gateway.state.snapshot
        with pytest.raises(ProvisionFailed):
            await _client(session, b, "bob", "GUARDB").provision()
    snapshot = b.gateway.state.snapshot
    rows = {d: snapshot.get(AssociationKey(d, "bob")) for d in ("GUARDA", "GUARDB")}
    rows = {d: None if r is None else r.verdict for d, r in rows.items()}  # type: ignore[misc]
    assert rows == {"GUARDA": Verdict.FORWARD, "GUARDB": Verdict.REFUSE}
    assert b.registry.get_sample_value("sentry_cluster_catchups_total", {"trigger": "write"}) == 1


async def test_an_admin_change_on_a_stale_node_is_built_again(
    two_nodes: tuple[DemoGateway, DemoGateway],
) -> None:
    a, b = two_nodes
    assert b.gateway.follower is not None
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as session:
        await _client(session, a, "alice", "GUARDC").provision()
        key = AssociationKey("GUARDC", "alice")
        async with asyncio.timeout(20):
            while key not in b.gateway.state.snapshot:
                await asyncio.sleep(0.01)
        await b.gateway.follower.stop_following()
        await _client(session, a, "shared", "GUARDD").provision()  # b misses this
        url = f"{b.admin_url}/api/associations/actions/block"
        headers = {"Authorization": f"Bearer {b.gateway.admin_token}"}
        body = {"filter": {"device_id": "GUARDC"}, "note": "stale"}
        async with session.post(url, json=body, headers=headers) as r:
            answer = await r.json()
            assert r.status == 200, answer
        # the first plan was built on a stale state: refused by the store, b
        # caught up (it now knows GUARDD) and planned again
        assert AssociationKey("GUARDD", "shared") in b.gateway.state.snapshot
        caught = b.registry.get_sample_value("sentry_cluster_catchups_total", {"trigger": "write"})
        assert caught == 1
        assert answer["changed"] == [{"device_id": "GUARDC", "user": "alice"}]
    state = a.gateway.state
    async with asyncio.timeout(20):
        while state.snapshot.get(key).verdict is not Verdict.REFUSE:  # type: ignore[union-attr]
            await asyncio.sleep(0.01)


async def test_a_node_behind_the_pruned_feed_reloads(
    two_nodes: tuple[DemoGateway, DemoGateway],
) -> None:
    a, b = two_nodes
    follower = b.gateway.follower
    assert follower is not None
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as session:
        await _client(session, b, "alice", "PRUNE1").provision()
        client = _client(session, b, "alice", "PRUNE1")
        await client.provision()
        await follower.stop_following()
        ping = asyncio.ensure_future(client.post("Ping", PING, timeout=60))
        await b.wait_held(1)
        async with asyncio.timeout(20):
            while AssociationKey("PRUNE1", "alice") not in a.gateway.state.snapshot:
                await a.gateway.follower.catch_up("poll")  # type: ignore[union-attr]
        state = a.gateway.state
        key = AssociationKey("PRUNE1", "alice")
        await state.apply(block(state.snapshot, key, note="gone", actor="t", now=state.clock()))
        await _client(session, a, "bob", "PRUNE2").provision()
        store = a.gateway.store.inner
        assert isinstance(store, PostgresStore)
        assert await store.prune_feed(older_than=-1) > 0
        await follower.catch_up("poll")  # FeedGap: the whole state again
        r = await asyncio.wait_for(ping, 30)
        assert (r.status, r.text("Status")) == (200, "129")
    assert b.registry.get_sample_value("sentry_cluster_reloads_total") == 1
    assert AssociationKey("PRUNE2", "bob") in b.gateway.state.snapshot


async def test_a_stopped_server_then_catch_up(
    pg_throwaway: ThrowawayServer, tmp_path: Path
) -> None:
    """Both nodes lose the server: known associations keep their decision,
    admin writes answer 503 with Retry-After, /readyz is 503; once it is back,
    a change through one node reaches the other's held Ping."""
    from sentry.testing.postgres import Databases

    databases = Databases(pg_throwaway.dsn)
    dsn = await databases.create()
    store = {"kind": "postgresql", "dsn": dsn, "feed_poll_seconds": 0.2,
             "check_interval_seconds": 0.2, "connect_timeout_seconds": 2.0}  # fmt: skip
    try:
        async with AsyncExitStack() as stack:
            nodes = []
            for name in ("a", "b"):
                (tmp_path / name).mkdir()
                nodes.append(
                    await stack.enter_async_context(
                        demo_gateway(tmp_path / name, demo_pools(), routing=DEMO_ROUTING,
                                     store=store, preferences={"new_device_access": "block"})
                    )
                )  # fmt: skip
            a, b = nodes
            await _stopped_then_back(pg_throwaway, a, b)
    finally:
        if not pg_throwaway.running:
            pg_throwaway.start()
        await databases.drop_all()


async def _stopped_then_back(server: ThrowawayServer, a: DemoGateway, b: DemoGateway) -> None:
    key = AssociationKey("STOP1", "alice")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as session:
        known = _client(session, b, "alice", "STOP1")
        await known.provision()
        async with asyncio.timeout(20):
            while key not in a.gateway.state.snapshot:
                await asyncio.sleep(0.01)
        server.stop()
        r = await known.post(
            "FolderSync", '<FolderSync xmlns="FolderHierarchy"><SyncKey>0</SyncKey></FolderSync>'
        )
        assert r.status == 200
        with pytest.raises(ProvisionFailed):  # new: new_device_access is block
            await _client(session, b, "bob", "STOP2").provision()
        headers = {"Authorization": f"Bearer {b.gateway.admin_token}"}
        body = {"filter": {"device_id": "STOP1"}, "note": "down"}
        async with session.post(
            f"{b.admin_url}/api/associations/actions/block", json=body, headers=headers
        ) as r:
            assert r.status == 503 and int(r.headers["Retry-After"]) >= 1
        async with session.get(f"{b.admin_url}/readyz") as r:
            assert r.status == 503 and "unreachable" in await r.text()
        assert b.registry.get_sample_value("sentry_store_errors_total", {"kind": "unreachable"})
        server.start()
        async with asyncio.timeout(30):
            while not (b.gateway.store.status.healthy and a.gateway.store.status.healthy):
                await asyncio.sleep(0.05)
        ping = asyncio.ensure_future(known.post("Ping", PING, timeout=60))
        await b.wait_held(1)
        async with session.post(
            f"{a.admin_url}/api/associations/actions/block",
            json=body,
            headers=headers | {"Authorization": f"Bearer {a.gateway.admin_token}"},
        ) as r:
            assert r.status == 200, await r.text()
        r = await asyncio.wait_for(ping, 30)
        assert (r.status, r.text("Status")) == (200, "129")
    assert AssociationKey("STOP2", "bob") not in a.gateway.state.snapshot


def test_the_cluster_example_configuration_is_valid() -> None:
    from sentry.settings import load_settings

    root = Path(__file__).resolve().parents[2]
    settings = load_settings(root / "config" / "cluster.example.yaml")
    assert settings.store.kind == "postgresql"
    assert settings.store.feed_poll_seconds == 2
    assert settings.preferences.max_devices_per_mailbox == 5


async def test_stopping_does_not_hang_on_a_task_that_ignores_its_cancellation(
    two_nodes: tuple[DemoGateway, DemoGateway], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listen or poll task stuck in a driver call that does not give way to
    the cancellation: the node stops following anyway (``STOP_SECONDS``) and
    says which task was left."""
    _, b = two_nodes
    follower = b.gateway.follower
    assert follower is not None
    monkeypatch.setattr(follower_module, "STOP_SECONDS", 0.2)
    started, release = asyncio.Event(), asyncio.Event()

    async def stubborn() -> None:
        started.set()
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()

    task = asyncio.ensure_future(stubborn())
    await started.wait()
    follower._tasks.append(task)  # type: ignore[arg-type]
    with capture_logs() as logs:
        await follower.stop_following()
    stuck = [e for e in logs if e["event"] == "cluster_task_stuck"]
    assert len(stuck) == 1 and stuck[0]["tasks"] == [task.get_name()]
    assert not follower.listening
    release.set()
    await task
