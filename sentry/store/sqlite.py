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
- Backup: ``backup(dest)`` copies the database with SQLite's online backup
  API on the store's own connection and thread, so it is serialised with
  writes: the copy is one consistent state, taken while the gateway runs
  (writes wait for the copy; it runs at disk speed). The copy is created 0600.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

from sentry.model import (
    NO_REALMS,
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

from ._sqlite_rows import ASSOCIATION_COLUMNS, association_decoder, load_objects, where_clause
from ._sqlite_schema import migrate
from ._sqlite_writes import write_changes
from .base import AssociationFilter, AuditFilter, StoreError
from .codec import DECODERS

__all__ = ["SqliteStore"]

T = TypeVar("T")
_FETCH = 20_000


def _connect(path: str, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=5000")
    migrate(conn)
    return conn


class SqliteStore:
    """A ``Store`` in one SQLite file; open it with ``await SqliteStore.open(path)``."""

    def __init__(
        self, conn: sqlite3.Connection, executor: ThreadPoolExecutor, path: Path | None = None
    ) -> None:
        self._conn: sqlite3.Connection | None = conn
        self._executor = executor
        self.path = path  # the database file (None: built by hand, e.g. in tests)

    @classmethod
    async def open(
        cls, path: str | Path, *, synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    ) -> SqliteStore:
        """Open (creating and migrating as needed) the database at ``path``."""
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sentry-sqlite")
        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(executor, _connect, str(path), synchronous)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(conn, executor, Path(path))

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise StoreError("the store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, conn)

    # --- Store protocol ---

    async def load(self) -> Snapshot:
        return await self._run(_load)

    async def apply(self, changes: Sequence[Change]) -> None:
        if changes:
            await self._run(lambda conn: _apply(conn, changes))

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
        """A consistent copy of the database at ``dest`` (which must not exist), mode 0600."""
        await self._run(lambda conn: _backup(conn, dest))

    async def close(self) -> None:
        if self._conn is None:
            return
        await self._run(lambda conn: conn.close())
        self._conn = None
        self._executor.shutdown(wait=True)


# --- Work done on the store's thread ---


def _apply(conn: sqlite3.Connection, changes: Sequence[Change]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        write_changes(conn, changes)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic GC while millions of objects are created (it would traverse
    them again and again), then ``gc.freeze()``: the loaded state lives as long
    as the process, so later collections skip it (refcounting still frees
    whatever is dropped). The previous GC state is restored."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def _load(conn: sqlite3.Connection) -> Snapshot:
    with _gc_paused():
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
    where, params = where_clause(filter)
    total = conn.execute(f"SELECT COUNT(*) FROM associations {where}", params).fetchone()[0]
    sql = (
        f"SELECT {ASSOCIATION_COLUMNS} FROM associations {where} "
        "ORDER BY user, device_id LIMIT ? OFFSET ?"
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
