"""``WatchedStore``: a failing store is noticed once, refuses writes at once, shows in
the metrics and recovers by itself only from faults it can recover from.

The ticks of the periodic check are driven by hand (``tick()``), so nothing
here waits on a clock; the files fail for real (deleted, read-only, damaged).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from sentry.observability import Metrics
from sentry.store import StoreError, StoreFault, StoreUnavailable
from sentry.store.sqlite import SqliteStore
from sentry.store_watch import WatchedStore
from sentry.testing.conversation import Conversation
from sentry.testing.files import CannotMakeReadOnly, damage_database, read_only


def conversation(n: int) -> Conversation:
    conv = Conversation()
    for i in range(n):
        conv.request(f"user{i}", f"DEV{i}")
    return conv


@pytest.fixture
async def watched(tmp_path):
    registry = CollectorRegistry()
    store = WatchedStore(await SqliteStore.open(tmp_path / "s.db"), Metrics(registry))
    for changes in conversation(20).log[:10]:
        await store.apply(changes)
    store.registry = registry  # type: ignore[attr-defined]
    yield store
    await store.close()


def sample(store: WatchedStore, name: str, **labels: str) -> float | None:
    return store.registry.get_sample_value(name, labels)  # type: ignore[attr-defined]


def events(logs: list[dict], name: str) -> list[dict]:
    return [e for e in logs if e["event"] == name]


async def test_a_healthy_store_stays_healthy(watched):
    with capture_logs() as logs:
        await watched.tick()
        await watched.tick()
    assert watched.status.healthy and logs == []
    assert sample(watched, "sentry_store_healthy") == 1


async def test_deletion_is_noticed_once_refuses_writes_and_stays(watched, tmp_path):
    _, listed = await watched.list_associations()
    for suffix in ("", "-wal", "-shm"):
        os.remove(f"{tmp_path / 's.db'}{suffix}")
    with capture_logs() as logs:
        await watched.tick()
        await watched.tick()
        with pytest.raises(StoreUnavailable):
            await watched.apply(conversation(20).log[10])
        await watched.tick()
    degraded = events(logs, "store_degraded")
    assert len(degraded) == 1, logs  # one event per state change, not per tick or write
    assert degraded[0]["fault"] == "deleted" and degraded[0]["permanent"] is True
    assert "/api/store/recover" in degraded[0]["recovery"]
    assert watched.status.problem.fault is StoreFault.DELETED
    assert sample(watched, "sentry_store_healthy") == 0
    assert sample(watched, "sentry_store_fault", kind="deleted") == 1
    assert sample(watched, "sentry_store_errors_total", kind="deleted") == 1
    # reads go on: the open file still matches the memory
    _, total = await watched.list_associations()
    assert total == listed > 0


async def test_a_write_is_refused_without_touching_a_store_known_to_fail(watched, tmp_path):
    os.remove(tmp_path / "s.db")
    await watched.tick()
    size = os.stat(f"{tmp_path / 's.db'}-wal").st_size
    with pytest.raises(StoreUnavailable):
        await watched.apply(conversation(20).log[10])
    assert os.stat(f"{tmp_path / 's.db'}-wal").st_size == size


async def test_a_failed_write_degrades_at_once(watched, tmp_path):
    os.remove(tmp_path / "s.db")  # no tick: the write itself finds out
    with capture_logs() as logs, pytest.raises(StoreUnavailable):
        await watched.apply(conversation(20).log[10])
    assert watched.status.problem.fault is StoreFault.DELETED
    assert events(logs, "store_degraded")[0]["during"] == "write"


async def test_recover_after_deletion(watched, tmp_path):
    os.remove(tmp_path / "s.db")
    await watched.tick()
    with capture_logs() as logs:
        await watched.recover()
    assert watched.status.healthy
    assert events(logs, "store_recovered")[0]["fault"] == "deleted"
    await watched.apply(conversation(20).log[10])  # writes work again
    assert sample(watched, "sentry_store_healthy") == 1


async def test_recover_is_refused_when_there_is_nothing_to_recover(watched):
    with pytest.raises(StoreError, match="deleted or replaced"):
        await watched.recover()


async def test_read_only_is_transient_and_recovers_when_a_probe_write_works(watched, tmp_path):
    path = tmp_path / "s.db"
    with capture_logs() as logs:
        try:
            with read_only(path, Path(f"{path}-wal")):
                await watched.tick()
                assert watched.status.problem.fault is StoreFault.READ_ONLY
                assert "retried every" in watched.status.advice
                await watched.tick()  # still read-only: no new event
        except CannotMakeReadOnly as exc:
            pytest.skip(str(exc))
        await watched.tick()
    assert watched.status.healthy
    assert [e["event"] for e in logs] == ["store_degraded", "store_recovered"]
    await watched.apply(conversation(20).log[10])


async def test_damage_found_by_a_read_is_permanent(watched, tmp_path):
    for changes in conversation(60).log[10:]:
        await watched.apply(changes)
    damage_database(tmp_path / "s.db")
    with capture_logs() as logs, pytest.raises(StoreUnavailable):
        await watched.list_associations()
    assert watched.status.problem.fault is StoreFault.CORRUPT
    await watched.tick()
    assert watched.status.problem.fault is StoreFault.CORRUPT
    assert len(events(logs, "store_degraded")) == 1


async def test_a_check_that_saw_the_store_before_a_failure_does_not_clear_it(watched, tmp_path):
    """A periodic check runs while a read finds the damage: the check looked
    before the damage and finds nothing, but the read's finding is newer and
    a permanent fault stays (a race seen under load in CI)."""
    for changes in conversation(60).log[10:]:
        await watched.apply(changes)
    inner, looked, release = watched.inner.check, asyncio.Event(), asyncio.Event()

    async def slow_check(**kwargs):
        found = await inner(**kwargs)  # looks now, before the damage
        looked.set()
        await release.wait()
        return found

    watched.inner.check = slow_check
    tick = asyncio.ensure_future(watched.tick())
    await looked.wait()
    damage_database(tmp_path / "s.db")
    with pytest.raises(StoreUnavailable):
        await watched.list_associations()
    assert watched.status.problem.fault is StoreFault.CORRUPT
    release.set()
    await tick
    assert watched.status.problem.fault is StoreFault.CORRUPT


async def test_after_a_failure_the_integrity_check_names_the_damage(watched, tmp_path):
    for changes in conversation(60).log[10:]:
        await watched.apply(changes)
    damage_database(tmp_path / "s.db")
    path = tmp_path / "s.db"
    try:
        with read_only(path, Path(f"{path}-wal")), pytest.raises(StoreUnavailable):
            await watched.apply(conversation(61).log[-1])
    except CannotMakeReadOnly as exc:
        pytest.skip(str(exc))
    for _ in range(200):  # the background integrity check
        if watched.status.problem.fault is StoreFault.CORRUPT:
            break
        await asyncio.sleep(0.01)
    assert watched.status.problem.fault is StoreFault.CORRUPT
