"""Recovery of a database file deleted or replaced under the running store: the
state it still holds open is written back to the path, never over someone else's file."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from sentry.store import StoreError, StoreFault
from sentry.store.sqlite import SqliteStore
from sentry.testing.conversation import Conversation


def conversation(n: int) -> Conversation:
    conv = Conversation()
    for i in range(n):
        conv.request(f"user{i}", f"DEV{i}")
    return conv


async def test_a_deleted_database_is_written_back_with_everything(tmp_path):
    path = tmp_path / "s.db"
    conv = conversation(30)
    store = await SqliteStore.open(path)
    for changes in conv.log[:20]:
        await store.apply(changes)
    first = min(conv.snapshot.keys())
    history = await store.history(first)
    assert history  # first sight at least
    for suffix in ("", "-wal", "-shm"):
        os.remove(f"{path}{suffix}")
    await store.recover()
    assert await store.check(integrity=True, probe=True) is None
    for changes in conv.log[20:]:  # writes go to the recovered file
        await store.apply(changes)
    await store.close()
    reopened = await SqliteStore.open(path)
    assert await reopened.load() == conv.snapshot
    assert await reopened.history(first) == history  # history came back too
    await reopened.close()
    assert not list(tmp_path.glob(".*recover*"))  # no temporary file left behind


async def test_a_deleted_write_ahead_log_is_recovered_into_the_database(tmp_path):
    path = tmp_path / "s.db"
    conv = conversation(10)
    store = await SqliteStore.open(path)
    for changes in conv.log:
        await store.apply(changes)
    os.remove(f"{path}-wal")
    found = await store.check()
    assert found is not None and found.fault is StoreFault.DELETED
    await store.recover()
    assert await store.check(probe=True) is None
    await store.close()
    reopened = await SqliteStore.open(path)
    assert await reopened.load() == conv.snapshot
    await reopened.close()


async def test_someone_elses_file_is_never_overwritten(tmp_path):
    path = tmp_path / "s.db"
    conv = conversation(5)
    store = await SqliteStore.open(path)
    for changes in conv.log:
        await store.apply(changes)
    os.rename(path, tmp_path / "mine.db")
    with sqlite3.connect(path) as foreign:
        foreign.execute("CREATE TABLE precious (x)")
    found = await store.check()
    assert found is not None and found.fault is StoreFault.REPLACED
    with pytest.raises(StoreError, match=r"not the gateway's files: .*s\.db"):
        await store.recover()
    with sqlite3.connect(path) as foreign:  # untouched
        assert foreign.execute("SELECT name FROM sqlite_master").fetchall() == [("precious",)]
    os.rename(path, tmp_path / "foreign.db")
    for leftover in Path(tmp_path).glob("s.db-*"):
        os.rename(leftover, tmp_path / f"foreign{leftover.name[4:]}")
    await store.recover()
    assert await store.check(probe=True) is None
    assert await store.load() == conv.snapshot
    await store.close()


async def test_nothing_to_recover_is_refused(tmp_path):
    store = await SqliteStore.open(tmp_path / "s.db")
    try:
        with pytest.raises(StoreError, match="nothing to recover"):
            await store.recover()
        assert await store.check(probe=True) is None
    finally:
        await store.close()
