"""The SQLite store's files: one owner, noticed when deleted, replaced, damaged or
read-only, created private; every way to be unusable at open is one clear error."""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from sentry.store import StoreFault, StoreOpenError, StoreUnavailable
from sentry.store._sqlite_files import classify
from sentry.store.sqlite import SqliteStore
from sentry.testing.conversation import Conversation
from sentry.testing.files import CannotMakeReadOnly, damage_database, read_only


def changes(n: int = 5) -> list:
    """The change lists of ``n`` first requests (one list each)."""
    conv = Conversation()
    for i in range(n):
        conv.request(f"user{i}", f"DEV{i}")
    return list(conv.log)


async def filled(path: Path, n: int = 5) -> SqliteStore:
    store = await SqliteStore.open(path)
    for c in changes(n):
        await store.apply(c)
    return store


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def no_umask():
    """Files must be private by their creation mode, not thanks to a strict umask."""
    old = os.umask(0)
    yield
    os.umask(old)


# --- Ownership ---


async def test_a_second_open_of_the_same_file_is_refused(tmp_path):
    store = await SqliteStore.open(tmp_path / "s.db")
    try:
        with pytest.raises(StoreOpenError, match=r"s\.db is in use by this process"):
            await SqliteStore.open(tmp_path / "s.db")
    finally:
        await store.close()
    await (await SqliteStore.open(tmp_path / "s.db")).close()  # released at close


async def test_other_connections_can_still_read_and_back_up_a_locked_store(tmp_path):
    store = await filled(tmp_path / "s.db")
    try:
        with sqlite3.connect(tmp_path / "s.db") as src, sqlite3.connect(tmp_path / "b.db") as dst:
            src.backup(dst)
            assert dst.execute("SELECT COUNT(*) FROM associations").fetchone() == (5,)
        assert await store.check(integrity=True, probe=True) is None
    finally:
        await store.close()


# --- Private files ---


async def test_the_database_its_log_and_a_new_directory_are_private(tmp_path, no_umask):
    store = await filled(tmp_path / "new" / "dir" / "s.db")
    await store.close()
    store = await SqliteStore.open(tmp_path / "new" / "dir" / "s.db")  # wal/shm exist now
    try:
        for name in ("s.db", "s.db-wal", "s.db-shm"):
            assert mode(tmp_path / "new" / "dir" / name) == 0o600, name
        assert mode(tmp_path / "new") == 0o700
        assert mode(tmp_path / "new" / "dir") == 0o700
    finally:
        await store.close()


async def test_an_existing_file_keeps_the_mode_the_operator_gave_it(tmp_path, no_umask):
    path = tmp_path / "s.db"
    await (await SqliteStore.open(path)).close()
    path.chmod(0o640)
    store = await SqliteStore.open(path)
    await store.close()
    assert mode(path) == 0o640


# --- Noticed at run time ---


async def test_a_deleted_database_is_noticed_and_a_write_into_it_is_not_reported_done(tmp_path):
    path = tmp_path / "s.db"
    store = await filled(path)
    try:
        for suffix in ("", "-wal", "-shm"):
            os.remove(f"{path}{suffix}")
        found = await store.check()
        assert found is not None and found.fault is StoreFault.DELETED
        with pytest.raises(StoreUnavailable) as caught:
            await store.apply(changes(6)[-1])
        assert caught.value.problem.fault is StoreFault.DELETED
        assert str(path) in caught.value.problem.detail
    finally:
        await store.close()


async def test_a_deleted_write_ahead_log_is_noticed(tmp_path):
    path = tmp_path / "s.db"
    store = await filled(path)
    try:
        os.remove(f"{path}-wal")
        found = await store.check()
        assert found is not None and found.fault is StoreFault.DELETED
        assert "write-ahead log" in found.detail
    finally:
        await store.close()


async def test_a_replaced_database_is_noticed(tmp_path):
    path = tmp_path / "s.db"
    store = await filled(path)
    try:
        sqlite3.connect(tmp_path / "other.db").close()
        os.replace(tmp_path / "other.db", path)
        found = await store.check()
        assert found is not None and found.fault is StoreFault.REPLACED
    finally:
        await store.close()


async def test_a_read_only_database_is_noticed_and_writes_fail_as_read_only(tmp_path):
    path = tmp_path / "s.db"
    store = await filled(path)
    try:
        try:
            with read_only(path, Path(f"{path}-wal")):
                found = await store.check()
                assert found is not None and found.fault is StoreFault.READ_ONLY
                with pytest.raises(StoreUnavailable) as caught:
                    await store.apply(changes(6)[-1])
                assert caught.value.problem.fault is StoreFault.READ_ONLY
        except CannotMakeReadOnly as exc:
            pytest.skip(str(exc))
        assert await store.check(probe=True) is None  # writable again: fine again
    finally:
        await store.close()


async def test_damage_is_found_by_a_read_and_by_the_integrity_check(tmp_path):
    path = tmp_path / "s.db"
    store = await filled(path, 40)
    try:
        assert await store.check(integrity=True) is None
        damage_database(path)
        with pytest.raises(StoreUnavailable) as caught:
            await store.list_associations()
        assert caught.value.problem.fault is StoreFault.CORRUPT
        found = await store.check(integrity=True)
        assert found is not None and found.fault is StoreFault.CORRUPT
    finally:
        await store.close()


async def test_a_full_database_is_a_full_fault(tmp_path):
    store = await filled(tmp_path / "s.db")
    try:
        # SQLite's own size cap: the same SQLITE_FULL a full disk gives.
        await store._run(lambda conn: conn.execute("PRAGMA max_page_count = 1"))
        with pytest.raises(StoreUnavailable) as caught:
            await store.apply([c for batch in changes(200)[-50:] for c in batch])
        assert caught.value.problem.fault is StoreFault.FULL
    finally:
        await store._run(lambda conn: conn.execute("PRAGMA max_page_count = 1073741823"))
        await store.close()


def test_faults_are_classified_by_code_and_errors_that_are_not_faults_pass_through():
    conn = sqlite3.connect(":memory:")
    with pytest.raises(sqlite3.Error) as syntax:
        conn.execute("SELEC 1")
    assert classify(syntax.value) is None  # a bug, not a file problem
    conn.execute("CREATE TABLE t (x PRIMARY KEY)")
    conn.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(sqlite3.IntegrityError) as constraint:
        conn.execute("INSERT INTO t VALUES (1)")
    assert classify(constraint.value) is None
    assert classify(OSError(errno.ENOSPC, "full")) is StoreFault.FULL
    assert classify(OSError(errno.EROFS, "ro")) is StoreFault.READ_ONLY
    assert classify(OSError(errno.EIO, "io")) is StoreFault.IO_ERROR
    assert classify(ValueError("x")) is None


# --- Unusable at open: one StoreOpenError naming the file ---


async def test_a_directory_is_not_a_database(tmp_path):
    (tmp_path / "s.db").mkdir()
    with pytest.raises(StoreOpenError, match=r"s\.db is a directory"):
        await SqliteStore.open(tmp_path / "s.db")


async def test_a_file_that_is_not_a_database_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "s.db"
    path.write_text("these are my notes\n" * 300)
    with pytest.raises(StoreOpenError, match=r"s\.db is not an SQLite database"):
        await SqliteStore.open(path)
    assert path.read_text() == "these are my notes\n" * 300


async def test_a_damaged_database_is_refused(tmp_path):
    path = tmp_path / "s.db"
    await (await filled(path, 40)).close()
    damage_database(path)
    with pytest.raises(StoreOpenError, match=r"s\.db is damaged"):
        await SqliteStore.open(path)


async def test_a_read_only_database_is_refused(tmp_path):
    path = tmp_path / "s.db"
    await (await filled(path)).close()
    try:
        with read_only(path), pytest.raises(StoreOpenError, match=r"s\.db is read-only"):
            await SqliteStore.open(path)
    except CannotMakeReadOnly as exc:
        pytest.skip(str(exc))


async def test_a_directory_that_refuses_new_files_is_refused(tmp_path):
    directory = tmp_path / "var"
    directory.mkdir()
    try:
        with read_only(directory), pytest.raises(StoreOpenError, match="is not writable"):
            await SqliteStore.open(directory / "s.db")
    except CannotMakeReadOnly as exc:
        pytest.skip(str(exc))
