"""The PostgreSQL store when its server misbehaves, against real servers: connections
terminated (``pg_terminate_backend``), a throwaway server stopped and started again,
wrong or missing passwords, a newer schema. Faults are ``StoreUnavailable`` with a
``StoreFault``; the pool and the listener reconnect by themselves; no message shows
a password."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from sentry.model import Association, AssociationKey
from sentry.observability import Metrics
from sentry.policy import changes as ch
from sentry.settings import StoreSettings
from sentry.store import SchemaError, StoreFault, StoreOpenError, StoreUnavailable
from sentry.store.factory import open_store
from sentry.store.postgres import PostgresOptions, PostgresStore
from sentry.store_watch import WatchedStore
from sentry.testing.pgfixtures import THROWAWAY_PASSWORD, run_sync
from sentry.testing.postgres import Databases, ThrowawayServer, with_database

FAST = PostgresOptions(pool_size=2, connect_timeout=2.0, command_timeout=10.0)


def put(i: int) -> tuple[ch.Change, ...]:
    row = Association(AssociationKey(f"D{i}", f"u{i}@corp.example"), "iPhone", first_seen=1.0)
    return (ch.PutAssociation(row),)


async def terminate_others(dsn: str) -> int:
    """``pg_terminate_backend`` on every other connection to the database."""
    conn = await asyncpg.connect(dsn)
    try:
        killed = await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return len(killed)


@pytest.fixture
async def throwaway_db(pg_throwaway: ThrowawayServer) -> AsyncIterator[str]:
    databases = Databases(pg_throwaway.dsn)
    dsn = await databases.create()
    yield dsn
    if not pg_throwaway.running:
        pg_throwaway.start()
    await databases.drop_all()


async def test_terminated_connections_are_replaced(pg_dsn: str) -> None:
    store = await PostgresStore.open(pg_dsn, options=FAST, prune=False)
    try:
        await store.apply(put(1))
        assert await terminate_others(pg_dsn) >= 1
        await store.apply(put(2))  # a fresh connection, no error
        assert len(await store.load()) == 2
        assert await terminate_others(pg_dsn) >= 1
        assert await store.check(probe=True) is None
        assert len((await store.list_associations())[0]) == 2
    finally:
        await store.close()


async def test_the_listener_comes_back_after_termination(pg_dsn: str) -> None:
    store = await PostgresStore.open(pg_dsn, options=FAST, prune=False)
    try:
        async with store.listen(keepalive=0.5) as feed:
            signals = aiter(feed)
            assert (await asyncio.wait_for(anext(signals), 10)).resumed
            await terminate_others(pg_dsn)
            again = await asyncio.wait_for(anext(signals), 20)
            assert again.resumed and feed.reconnects == 1  # catch up: you may have missed rows
            seq = await store.apply_seq(put(1))
            assert (await asyncio.wait_for(anext(signals), 10)).seq == seq
    finally:
        await store.close()


async def test_a_stopped_server_is_unreachable_then_recovers_by_itself(
    pg_throwaway: ThrowawayServer, throwaway_db: str
) -> None:
    store = await PostgresStore.open(throwaway_db, options=FAST, prune=False)
    watched = WatchedStore(store, Metrics(CollectorRegistry()), interval=0.05)
    try:
        await watched.apply(put(1))
        pg_throwaway.stop()
        problem = await store.check(probe=True)
        assert problem is not None and problem.fault is StoreFault.UNREACHABLE
        assert THROWAWAY_PASSWORD not in problem.detail
        with pytest.raises(StoreUnavailable) as caught:
            await watched.apply(put(2))
        assert caught.value.problem.fault is StoreFault.UNREACHABLE
        assert watched.status.problem is not None
        assert watched.status.problem.fault is StoreFault.UNREACHABLE
        assert "start the database server" in (watched.status.advice or "")
        with pytest.raises(StoreUnavailable):
            await watched.apply(put(2))  # refused at once while degraded
        with pytest.raises(StoreUnavailable):
            await store.list_associations()

        pg_throwaway.start()
        async with asyncio.timeout(20):
            while not watched.status.healthy:
                await watched.tick()  # the periodic probe write
                await asyncio.sleep(0.05)
        await watched.apply(put(2))
        assert len(await store.load()) == 2
    finally:
        await watched.close()


async def test_the_listener_survives_a_server_restart(
    pg_throwaway: ThrowawayServer, throwaway_db: str
) -> None:
    store = await PostgresStore.open(throwaway_db, options=FAST, prune=False)
    try:
        async with store.listen(keepalive=0.5) as feed:
            signals = aiter(feed)
            assert (await asyncio.wait_for(anext(signals), 10)).resumed
            pg_throwaway.stop()
            pending = asyncio.ensure_future(anext(signals))
            async with asyncio.timeout(20):
                while feed.connected:
                    await asyncio.sleep(0.05)
            assert feed.problem is not None and feed.problem.fault is StoreFault.UNREACHABLE
            pg_throwaway.start()
            assert (await asyncio.wait_for(pending, 30)).resumed
            seq = await store.apply_seq(put(1))
            assert (await asyncio.wait_for(anext(signals), 10)).seq == seq
    finally:
        await store.close()


async def test_an_unreachable_server_stops_the_start_with_the_key(
    pg_throwaway: ThrowawayServer, throwaway_db: str
) -> None:
    pg_throwaway.stop()
    with pytest.raises(StoreOpenError) as caught:
        await PostgresStore.open(throwaway_db, options=FAST)
    assert caught.value.key == "store.dsn"
    assert str(caught.value).startswith("store.dsn: cannot connect to postgresql://postgres:***@")
    assert THROWAWAY_PASSWORD not in str(caught.value)


async def test_a_wrong_password_is_refused_without_showing_it(throwaway_db: str) -> None:
    wrong = throwaway_db.replace(THROWAWAY_PASSWORD, "hunter2-wrong")
    with pytest.raises(StoreOpenError) as caught:
        await PostgresStore.open(wrong, options=FAST)
    message = str(caught.value)
    assert "password authentication failed" in message and "(refused)" in message
    assert "hunter2-wrong" not in message and THROWAWAY_PASSWORD not in message


def _without_password(dsn: str) -> str:
    return dsn.replace(f":{THROWAWAY_PASSWORD}@", "@")


async def test_the_password_can_come_from_password_file(throwaway_db: str, tmp_path: Path) -> None:
    secret = tmp_path / "pg-password"
    secret.write_text(THROWAWAY_PASSWORD + "\n")
    settings = StoreSettings(
        kind="postgresql", dsn=_without_password(throwaway_db), password_file=str(secret)
    )
    store = await open_store(settings, root=tmp_path)
    try:
        assert isinstance(store, PostgresStore)
        assert await store.check(probe=True) is None
    finally:
        await store.close()


async def test_the_password_can_come_from_pgpassfile(
    throwaway_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"*:*:*:postgres:{THROWAWAY_PASSWORD}\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    store = await PostgresStore.open(_without_password(throwaway_db), options=FAST, prune=False)
    await store.close()
    monkeypatch.delenv("PGPASSFILE")
    monkeypatch.setenv("PGPASSWORD", THROWAWAY_PASSWORD)
    store = await PostgresStore.open(_without_password(throwaway_db), options=FAST, prune=False)
    await store.close()


async def test_a_newer_schema_is_refused(pg_dsn: str) -> None:
    await (await PostgresStore.open(pg_dsn, prune=False)).close()
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("INSERT INTO schema_version VALUES (99, 0)")
    finally:
        await conn.close()
    with pytest.raises(SchemaError) as caught:
        await PostgresStore.open(pg_dsn)
    assert caught.value.key == "store.dsn" and "newer than this code" in str(caught.value)


async def test_migrations_are_recorded_and_idempotent(pg_dsn: str) -> None:
    for _ in range(2):
        await (await PostgresStore.open(pg_dsn, prune=False)).close()
    conn = await asyncpg.connect(pg_dsn)
    try:
        versions = [r[0] for r in await conn.fetch("SELECT version FROM schema_version")]
    finally:
        await conn.close()
    from sentry.store._pg_schema import SCHEMA_VERSION

    assert versions == list(range(1, SCHEMA_VERSION + 1))


async def test_nodes_starting_at_once_migrate_once(pg_dsn: str) -> None:
    stores = await asyncio.gather(*(PostgresStore.open(pg_dsn, prune=False) for _ in range(4)))
    for store in stores:
        await store.close()


def test_with_database_keeps_the_query() -> None:
    dsn = "postgresql://u@/postgres?host=/tmp/x&port=5432"
    assert with_database(dsn, "db1") == "postgresql://u@/db1?host=/tmp/x&port=5432"
    assert with_database("postgresql://u@h:5/a", "b") == "postgresql://u@h:5/b"
    assert run_sync(asyncio.sleep(0, result=3)) == 3


async def test_a_server_that_never_answers_is_one_timeout_not_four() -> None:
    """A cut-off server: the start fails after connect_timeout, as 'unreachable'."""
    from urllib.parse import urlsplit

    from sentry.testing.faulty import refusing_port, silent_backend

    async with silent_backend() as silent:
        where = urlsplit(silent.url)
        dsn = f"postgresql://sentry:{THROWAWAY_PASSWORD}@{where.hostname}:{where.port}/x"
        options = PostgresOptions(connect_timeout=0.3)
        with pytest.raises(StoreOpenError) as caught:
            await PostgresStore.open(dsn, options=options)
        assert "cannot connect to" in str(caught.value) and "timed out" in str(caught.value)
        assert THROWAWAY_PASSWORD not in str(caught.value)
    with refusing_port() as sock:
        host, port = sock.getsockname()[:2]
        with pytest.raises(StoreOpenError, match=r"cannot connect to .*no connection"):
            await PostgresStore.open(f"postgresql://sentry@{host}:{port}/x", options=options)
