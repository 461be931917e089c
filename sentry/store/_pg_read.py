"""Reads of the PostgreSQL store: the bulk load, the admin queries, the feed.

Approach. Each function takes a driver connection (asyncpg) and runs its
statements there; ``PostgresStore`` supplies the connection, the retries and
the fault mapping. The load reads every table in one repeatable-read,
read-only transaction (one consistent instant, with the feed's head), the
associations through a server-side cursor in batches and the document tables
as one aggregated JSON array each (one parse per table, as in SQLite). The
admin list runs its count and its page in one such transaction, so the two
agree; its ``ORDER BY principal, device_id`` is the order of an index.
"""

from __future__ import annotations

import json
from typing import Any

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
from sentry.policy.snapshot import Snapshot

from ._pg_rows import COLUMNS, where_clause
from ._sqlite_rows import OBJECT_TABLES, association_decoder
from .base import AssociationFilter, AuditFilter
from .codec import DECODERS, gc_paused
from .feed import FeedEntry, decode_changes

__all__ = [
    "BACKEND_GONE",
    "FEED_ROW",
    "HEAD",
    "association",
    "audit",
    "feed",
    "history",
    "load",
    "page",
    "prune",
]

_BATCH = 20_000
HEAD = (
    "SELECT GREATEST((SELECT COALESCE(MAX(seq), 0) FROM change_feed), "
    "(SELECT through FROM change_feed_pruned))"
)
FEED_ROW = "SELECT EXISTS (SELECT 1 FROM change_feed WHERE seq = $1)"
BACKEND_GONE = "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)"


async def load(conn: Any) -> tuple[Snapshot, int]:
    """The whole state and the feed head, at one instant."""
    with gc_paused():
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            head = int(await conn.fetchval(HEAD))
            objects = {t: await _documents(conn, t, k) for t, k in OBJECT_TABLES.items()}
            config = {
                r[0]: json.loads(r[1]) for r in await conn.fetch("SELECT name, data FROM config")
            }
            established = await _documents(conn, "established_types", EstablishedType)
            rows = await _associations(conn)
        snapshot = Snapshot.build(
            users=objects["users"],
            devices=objects["devices"],
            pools=objects["pools"],
            settings=objects["exchange_settings"],
            labels=objects["labels"],
            routing=_config(config, "routing", Routing, Routing()),
            prefs=_config(config, "preferences", Preferences, Preferences()),
            associations=rows,
            realms=_config(config, "realms", Realms, NO_REALMS),
            access_rules=_config(config, "access_rules", AccessRules, NO_RULES),
            established=established,
        )
    return snapshot, head


async def _documents(conn: Any, table: str, kind: type[Any]) -> list[Any]:
    text = await conn.fetchval(
        f"SELECT '[' || COALESCE(string_agg(data, ','), '') || ']' FROM {table}"
    )
    decode = DECODERS[kind]
    return [decode(doc) for doc in json.loads(text)]


def _config(config: dict[str, Any], name: str, kind: type[Any], default: Any) -> Any:
    doc = config.get(name)
    return default if doc is None else DECODERS[kind](doc)


async def _associations(conn: Any) -> list[Association]:
    decode = association_decoder()
    cursor = await conn.cursor(f"SELECT {COLUMNS} FROM associations")
    out: list[Association] = []
    while batch := await cursor.fetch(_BATCH):
        out.extend(map(decode, batch))
    return out


async def page(
    conn: Any, f: AssociationFilter | None, offset: int, limit: int
) -> tuple[list[Association], int]:
    """One page of the admin list and the number of matching rows."""
    where, params = where_clause(f)
    n = len(params)
    sql = (
        f"SELECT {COLUMNS} FROM associations {where} "
        f"ORDER BY principal, device_id LIMIT ${n + 1} OFFSET ${n + 2}"
    )
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        total = await conn.fetchval(f"SELECT count(*) FROM associations {where}", *params)
        rows = await conn.fetch(sql, *params, max(limit, 0), max(offset, 0))
    decode = association_decoder()
    return [decode(r) for r in rows], int(total)


async def association(conn: Any, key: AssociationKey) -> Association | None:
    sql = f"SELECT {COLUMNS} FROM associations WHERE device_id = $1 AND principal = $2"
    row = await conn.fetchrow(sql, key.device_id, key.user)
    return None if row is None else association_decoder()(row)


async def history(conn: Any, key: AssociationKey) -> list[HistoryEvent]:
    sql = "SELECT at, kind, detail FROM history WHERE device_id = $1 AND principal = $2 ORDER BY id"
    rows = await conn.fetch(sql, key.device_id, key.user)
    return [HistoryEvent(r[0], r[1], json.loads(r[2])) for r in rows]


def _audit_where(f: AuditFilter | None) -> tuple[str, list[Any]]:
    tests: list[str] = []
    params: list[Any] = []
    if f is not None:
        for sql, value in (
            ("actor = ${}", f.actor),
            ("strpos(lower(target), lower(${})) > 0", f.target),
            ("at >= ${}", f.since),
            ("at < ${}", f.until),
        ):
            if value is not None:
                params.append(value)
                tests.append(sql.format(len(params)))
    return ("WHERE " + " AND ".join(tests) if tests else ""), params


async def audit(
    conn: Any, offset: int, limit: int, f: AuditFilter | None
) -> tuple[list[AuditEntry], int]:
    """One page of the audit log, newest first, and the number of matching entries."""
    where, params = _audit_where(f)
    n = len(params)
    sql = (
        f"SELECT at, actor, action, target, note, before, after FROM audit {where} "
        f"ORDER BY id DESC LIMIT ${n + 1} OFFSET ${n + 2}"
    )
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        total = await conn.fetchval(f"SELECT count(*) FROM audit {where}", *params)
        rows = await conn.fetch(sql, *params, max(limit, 0), max(offset, 0))
    entries = [AuditEntry(r[0], r[1], r[2], r[3], r[4], _json(r[5]), _json(r[6])) for r in rows]
    return entries, int(total)


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


async def feed(conn: Any, seq: int, limit: int | None) -> list[FeedEntry]:
    """Feed rows after ``seq``, oldest first."""
    sql = "SELECT seq, node, at, changes FROM change_feed WHERE seq > $1 ORDER BY seq"
    if limit is not None:
        rows = await conn.fetch(sql + " LIMIT $2", seq, max(limit, 0))
    else:
        rows = await conn.fetch(sql, seq)
    return [FeedEntry(r[0], r[1], r[2], decode_changes(r[3])) for r in rows]


async def prune(conn: Any, older_than: float) -> int:
    """Delete feed rows older than ``older_than`` seconds (server time) and
    raise ``change_feed_pruned.through`` to the highest deleted ``seq``."""
    deleted = await conn.fetchval(
        "WITH d AS (DELETE FROM change_feed "
        "WHERE at < extract(epoch FROM clock_timestamp()) - $1 RETURNING seq), "
        "u AS (UPDATE change_feed_pruned SET through = GREATEST(through, (SELECT MAX(seq) FROM d)) "
        "WHERE EXISTS (SELECT 1 FROM d)) "
        "SELECT count(*) FROM d",
        older_than,
    )
    return int(deleted)
