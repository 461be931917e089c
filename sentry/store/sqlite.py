"""``SqliteStore``: the embedded default store (stdlib ``sqlite3``).

Approach.

- One connection, owned by one dedicated thread (a single-worker executor):
  every call runs there via ``run_in_executor``, so the event loop never
  blocks on disk and the connection is never shared between threads.
- Durability: WAL journal with ``synchronous=NORMAL``. A commit has reached
  the operating system when ``apply`` returns, so a process crash or
  ``kill -9`` loses nothing an admin did; only a power loss or OS crash can
  lose the last transactions (FULL would fsync every commit to close that
  window, at a cost on every write; pass ``synchronous="FULL"`` for it).
- ``apply`` runs the whole change list inside ``BEGIN IMMEDIATE .. COMMIT``;
  any error rolls everything back.
- Schema: numbered migrations in ``MIGRATIONS``, applied at open inside one
  transaction and recorded in ``schema_version``; reopening is a no-op, and a
  database from a newer version is refused (``SchemaError``).
- Row format: associations are flat columns (no JSON on the load path except
  the rare override), read with one ``SELECT`` and ``fetchmany``; repeated
  values are shared through ``codec.Interner``. Registry and configuration
  values are JSON documents (``codec``).
- Watched files (``_sqlite_files``): the database is locked against a second
  gateway, checked at open (integrity, a real write), and after every write
  its path is checked to still name the open file, so a commit into a
  deleted or replaced file is never reported as done. SQLite errors that
  reveal a problem with the files become ``StoreUnavailable`` carrying a
  ``StoreFault``; ``check`` runs the same checks on demand. At open, every
  problem becomes one ``StoreOpenError`` naming the file.
- The probe write is ``PRAGMA user_version`` (a counter in the header that
  nothing else uses): a real page write through the write-ahead log.
- Backup: ``backup(dest)`` copies the database with SQLite's online backup
  API on the store's own connection and thread, so it is serialised with
  writes: the copy is one consistent state, taken while the gateway runs
  (writes wait for the copy; it runs at disk speed). The copy is created 0600.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

from sentry.model import (
    NO_REALMS,
    NO_RULES,
    AccessRules,
    Association,
    AssociationKey,
    AuditEntry,
    EstablishedType,
    HistoryEvent,
    Preferences,
    Realms,
    Routing,
)
from sentry.policy.changes import Change
from sentry.policy.snapshot import Snapshot

from ._sqlite_files import FileGuard, classify, problem_of
from ._sqlite_recover import recover_files
from ._sqlite_rows import ASSOCIATION_COLUMNS, association_decoder, load_objects, where_clause
from ._sqlite_schema import migrate
from ._sqlite_writes import write_changes
from .base import (
    AssociationFilter,
    AuditFilter,
    SchemaError,
    StoreError,
    StoreFault,
    StoreOpenError,
    StoreProblem,
    StoreUnavailable,
)
from .codec import DECODERS, gc_paused

__all__ = ["SqliteStore"]

T = TypeVar("T")
_FETCH = 20_000
_SQLITE_NOTADB = 26


def _connect(path: str, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA busy_timeout=5000")
        _integrity(conn, path)
        migrate(conn)
        _probe(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _integrity(conn: sqlite3.Connection, path: str) -> None:
    """``PRAGMA quick_check``; ``StoreUnavailable`` (corrupt) unless it says ok."""
    rows = conn.execute("PRAGMA quick_check").fetchall()
    if rows != [("ok",)]:
        found = "; ".join(str(r[0]) for r in rows[:3])
        detail = f"{path}: the integrity check failed: {found}"
        raise StoreUnavailable(StoreProblem(StoreFault.CORRUPT, detail))


def _probe(conn: sqlite3.Connection) -> None:
    """A small real write (the header's ``user_version``), committed."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    conn.execute(f"PRAGMA user_version = {(int(version) + 1) % 2**31}")


def _open_files(path: Path, synchronous: str) -> tuple[sqlite3.Connection, FileGuard]:
    """Lock, open and check the database; ``StoreOpenError`` saying why not."""
    guard = FileGuard.acquire(path)
    try:
        conn = _connect(str(path), synchronous)
    except BaseException as exc:
        guard.release()
        if isinstance(exc, Exception):
            raise _open_error(path, exc) from None
        raise
    guard.remember()
    return conn, guard


def _open_error(path: Path, exc: Exception) -> StoreOpenError:
    if isinstance(exc, SchemaError):
        return SchemaError(f"{path}: {exc.problem}")
    if isinstance(exc, StoreOpenError):
        return exc
    if isinstance(exc, StoreUnavailable):
        return StoreOpenError(exc.problem.detail)
    fault = classify(exc)
    if fault is StoreFault.CORRUPT:
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        what = "is not an SQLite database" if code == _SQLITE_NOTADB else "is damaged"
        return StoreOpenError(f"{path} {what} ({exc})")
    if fault is StoreFault.READ_ONLY:
        return StoreOpenError(f"{path} is read-only ({exc})")
    if fault is not None:
        return StoreOpenError(f"{path} cannot be used: {problem_of(exc, fault)}")
    return StoreOpenError(f"{path} cannot be opened: {type(exc).__name__}: {exc}")


class SqliteStore:
    """A ``Store`` in one SQLite file; open it with ``await SqliteStore.open(path)``."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        executor: ThreadPoolExecutor,
        guard: FileGuard,
        synchronous: str = "NORMAL",
    ) -> None:
        self._conn: sqlite3.Connection | None = conn
        self._executor = executor
        self._guard = guard
        self._synchronous = synchronous
        self._lost: StoreProblem | None = None  # a recovery that could not reopen

    @property
    def path(self) -> Path:
        """The database file."""
        return self._guard.path

    @classmethod
    async def open(
        cls, path: str | Path, *, synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    ) -> SqliteStore:
        """Open (creating and migrating as needed) the database at ``path``.

        ``StoreOpenError`` naming the file when it cannot be used: a
        directory, not a database, damaged, read-only, or locked by another
        process."""
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sentry-sqlite")
        loop = asyncio.get_running_loop()
        try:
            conn, guard = await loop.run_in_executor(executor, _open_files, Path(path), synchronous)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(conn, executor, guard, synchronous)

    async def _run(self, fn: Callable[[sqlite3.Connection], T], *, watched: bool = True) -> T:
        """Run ``fn`` on the store's thread; ``watched``: its SQLite errors about
        the store's files become ``StoreUnavailable``."""
        conn = self._conn
        if conn is None:
            if self._lost is not None:
                raise StoreUnavailable(self._lost)
            raise StoreError("the store is closed")
        loop = asyncio.get_running_loop()
        if not watched:
            return await loop.run_in_executor(self._executor, fn, conn)
        return await loop.run_in_executor(self._executor, self._watched, fn, conn)

    def _watched(self, fn: Callable[[sqlite3.Connection], T], conn: sqlite3.Connection) -> T:
        """Run ``fn`` on the store's thread; a fault becomes ``StoreUnavailable``
        (what the file checks see first: they name the cause better)."""
        try:
            return fn(conn)
        except sqlite3.Error as exc:
            fault = classify(exc)
            if fault is None:
                raise
            problem = self._guard.problem() or problem_of(exc, fault)
            raise StoreUnavailable(problem) from exc

    def _write(self, fn: Callable[[sqlite3.Connection], None], conn: sqlite3.Connection) -> None:
        """A write, then the check that it went to the file at the path."""
        fn(conn)
        problem = self._guard.identity_problem()
        if problem is not None:
            raise StoreUnavailable(problem)

    # --- Store protocol ---

    async def load(self) -> Snapshot:
        return await self._run(_load)

    async def apply(self, changes: Sequence[Change]) -> None:
        if changes:
            await self._run(lambda conn: self._write(lambda c: _apply(c, changes), conn))

    async def list_associations(
        self, filter: AssociationFilter | None = None, offset: int = 0, limit: int = 100
    ) -> tuple[list[Association], int]:
        return await self._run(lambda conn: _list(conn, filter, offset, limit))

    async def get_association(self, key: AssociationKey) -> Association | None:
        return await self._run(lambda conn: _get(conn, key))

    async def history(self, key: AssociationKey) -> list[HistoryEvent]:
        return await self._run(lambda conn: _history(conn, key))

    async def audit(
        self, offset: int = 0, limit: int = 100, filter: AuditFilter | None = None
    ) -> tuple[list[AuditEntry], int]:
        return await self._run(lambda conn: _audit(conn, offset, limit, filter))

    async def backup(self, dest: Path) -> None:
        """A consistent copy of the database at ``dest`` (which must not exist), mode 0600.

        Errors are the copy's (``dest``), not the store's: they are not faults."""
        await self._run(lambda conn: _backup(conn, dest), watched=False)

    async def check(self, *, integrity: bool = False, probe: bool = False) -> StoreProblem | None:
        """The files' problem now, or None; ``integrity`` adds ``PRAGMA
        quick_check``, ``probe`` a small committed write."""

        def run(conn: sqlite3.Connection) -> StoreProblem | None:
            problem = self._guard.problem()
            if problem is not None:
                return problem
            try:
                if integrity:
                    self._watched(lambda c: _integrity(c, str(self.path)), conn)
                if probe:
                    self._watched(lambda c: self._write(_probe, c), conn)
            except StoreUnavailable as exc:
                return exc.problem
            return None

        return await self._run(run)

    async def recover(self) -> None:
        """After the database file or its log was deleted or replaced: write the
        open database back to the path and use that file from now on.

        ``StoreError`` (nothing changed) when someone else's file is in the way
        or nothing needs recovering; ``StoreUnavailable`` when the file was
        written but cannot be opened again (it stays at the path for a restart)."""
        await self._run(self._recover)

    def _recover(self, conn: sqlite3.Connection) -> None:
        try:
            recover_files(conn, self._guard)
        except OSError as exc:
            raise StoreError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self._conn = None
        try:
            self._conn, self._guard = _open_files(self.path, self._synchronous)
        except StoreOpenError as exc:
            detail = (
                f"the state was written back to {self.path} but cannot be opened: {exc.problem}"
            )
            self._lost = StoreProblem(StoreFault.IO_ERROR, detail)
            raise StoreUnavailable(self._lost) from None

    async def close(self) -> None:
        if self._conn is not None:
            await self._run(lambda conn: conn.close())
            self._conn = None
            self._guard.release()
        self._lost = None
        self._executor.shutdown(wait=True)


# --- Work done on the store's thread ---


def _apply(conn: sqlite3.Connection, changes: Sequence[Change]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        write_changes(conn, changes)
        conn.execute("COMMIT")
    except BaseException:
        # SQLite itself rolls back after some errors (full, I/O, busy): a
        # second ROLLBACK would fail and hide the error that matters.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _load(conn: sqlite3.Connection) -> Snapshot:
    with gc_paused():
        return _load_all(conn)


def _load_all(conn: sqlite3.Connection) -> Snapshot:
    objects = load_objects(conn)
    config = dict(conn.execute("SELECT name, data FROM config").fetchall())
    snapshot = Snapshot.build(
        users=objects["users"],
        devices=objects["devices"],
        pools=objects["pools"],
        settings=objects["exchange_settings"],
        labels=objects["labels"],
        routing=_config(config, "routing", Routing, Routing()),
        prefs=_config(config, "preferences", Preferences, Preferences()),
        associations=_associations(conn),
        realms=_config(config, "realms", Realms, NO_REALMS),
        access_rules=_config(config, "access_rules", AccessRules, NO_RULES),
        established=_established(conn),
    )
    return snapshot


def _established(conn: sqlite3.Connection) -> list[EstablishedType]:
    rows = conn.execute("SELECT data FROM established_types").fetchall()
    return [DECODERS[EstablishedType](json.loads(data)) for (data,) in rows]


def _config(config: dict[str, str], name: str, kind: type[T], default: T) -> T:
    text = config.get(name)
    return default if text is None else DECODERS[kind](json.loads(text))


def _associations(conn: sqlite3.Connection) -> Iterator[Association]:
    decode = association_decoder()
    cursor = conn.execute(f"SELECT {ASSOCIATION_COLUMNS} FROM associations")
    while rows := cursor.fetchmany(_FETCH):
        yield from map(decode, rows)


def _list(
    conn: sqlite3.Connection, filter: AssociationFilter | None, offset: int, limit: int
) -> tuple[list[Association], int]:
    """One page in (user, device_id) order. The page's keys are found first
    (the ``associations_by_user`` index covers them), then only those rows are
    read: an OFFSET over whole rows reads every skipped row from the table
    (0.6 s at offset 100,000; this way a few milliseconds)."""
    where, params = where_clause(filter)
    total = conn.execute(f"SELECT COUNT(*) FROM associations {where}", params).fetchone()[0]
    page = (
        f"SELECT device_id, user FROM associations {where} "
        "ORDER BY user, device_id LIMIT ? OFFSET ?"
    )
    sql = (
        f"SELECT {ASSOCIATION_COLUMNS} FROM associations "
        f"WHERE (device_id, user) IN ({page}) ORDER BY user, device_id"
    )
    decode = association_decoder()
    rows = conn.execute(sql, [*params, max(limit, 0), max(offset, 0)]).fetchall()
    return [decode(r) for r in rows], int(total)


def _get(conn: sqlite3.Connection, key: AssociationKey) -> Association | None:
    sql = f"SELECT {ASSOCIATION_COLUMNS} FROM associations WHERE device_id = ? AND user = ?"
    row = conn.execute(sql, (key.device_id, key.user)).fetchone()
    return None if row is None else association_decoder()(row)


def _history(conn: sqlite3.Connection, key: AssociationKey) -> list[HistoryEvent]:
    sql = "SELECT at, kind, detail FROM history WHERE device_id = ? AND user = ? ORDER BY id"
    rows = conn.execute(sql, (key.device_id, key.user)).fetchall()
    return [HistoryEvent(at, kind, json.loads(detail)) for at, kind, detail in rows]


def _audit_where(f: AuditFilter | None) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if f is not None and f.actor is not None:
        clauses.append("actor = ?")
        params.append(f.actor)
    if f is not None and f.target is not None:
        clauses.append("instr(lower(target), lower(?)) > 0")
        params.append(f.target)
    if f is not None and f.since is not None:
        clauses.append("at >= ?")
        params.append(f.since)
    if f is not None and f.until is not None:
        clauses.append("at < ?")
        params.append(f.until)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), params


def _audit(
    conn: sqlite3.Connection, offset: int, limit: int, f: AuditFilter | None
) -> tuple[list[AuditEntry], int]:
    where, params = _audit_where(f)
    total = conn.execute(f"SELECT COUNT(*) FROM audit {where}", params).fetchone()[0]
    sql = (
        f"SELECT at, actor, action, target, note, before, after FROM audit {where} "
        "ORDER BY id DESC LIMIT ? OFFSET ?"
    )
    rows = conn.execute(sql, [*params, max(limit, 0), max(offset, 0)]).fetchall()
    entries = [
        AuditEntry(at, actor, action, target, note, _json(before), _json(after))
        for at, actor, action, target, note, before, after in rows
    ]
    return entries, int(total)


def _backup(conn: sqlite3.Connection, dest: Path) -> None:
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never over a file
    os.close(fd)
    target = sqlite3.connect(dest)
    try:
        conn.backup(target)
    finally:
        target.close()


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)
