"""The PostgreSQL schema as numbered migrations, applied in one transaction at open.

Approach. Like the SQLite schema (``_sqlite_schema``): ``MIGRATIONS[n - 1]``
brings the schema from version n-1 to n, ``schema_version`` records each
applied version, a database newer than this code is refused (``SchemaError``),
and a released migration is never edited (append a new one). PostgreSQL DDL
is transactional, so a migration is all or nothing; several nodes starting at
once are serialised by an advisory lock taken inside that transaction (the
second one finds the work done).

Layout. Associations are flat columns (a million load in seconds); the mailbox
principal is the column ``principal`` (``user`` is a reserved word). Indexes
serve the admin list: ``(principal, device_id)`` is its order (and the user
filter), the primary key ``(device_id, principal)`` the DeviceId filter, and
partial or expression indexes the selective filters (state, pool, device
type, unverified, never seen). Registry and configuration values are JSON
documents kept as ``text`` (not ``jsonb``: read back verbatim and parsed once,
and ``text`` keeps every escape ``json.dumps`` writes). History and audit are
append-only with identity keys.

The change feed (``change_feed``): one row per ``apply`` transaction, its
``seq`` taken while the transaction holds ``FEED_LOCK`` (so rows commit in
``seq`` order and a reader that sees ``seq`` N has seen every row before N),
the writing node, the server's time, and the serialised change list
(``sentry.store.feed``); ``change_feed_pruned.through`` is the highest
``seq`` pruning may have removed (a reader that is behind it must reload).
The key columns sort as code points (``COLLATE "C"``), like Python and
SQLite, whatever the database's default collation. ``store_probe`` holds
one row per node: the health probe's small real write. Migration 2 adds the
device access rule a row matched (``access_rule``) and re-creates the state
index for the ``quarantined`` state (the rules themselves are the ``config``
document ``access_rules``).
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from .base import SchemaError

__all__ = [
    "FEED_LOCK",
    "MIGRATIONS",
    "MIGRATION_LOCK",
    "SCHEMA_VERSION",
    "Executor",
    "migrate",
]

MIGRATION_LOCK = 0x53454E545259_01  # pg_advisory_xact_lock keys ("SENTRY" + n)
FEED_LOCK = 0x53454E545259_02

_STATE = (  # the list state as migration 1 indexed it (never edit a released migration)
    "CASE WHEN wipe IN ('pending', 'failed') THEN 'wipe_pending' "
    "WHEN wipe = 'wiped' THEN 'wiped' "
    "WHEN verdict = 'forward' THEN 'allowed' ELSE 'blocked' END"
)
STATE_SQL = (  # since migration 2: a refused row a quarantine rule matched (no admin word)
    "CASE WHEN wipe IN ('pending', 'failed') THEN 'wipe_pending' "
    "WHEN wipe = 'wiped' THEN 'wiped' "
    "WHEN verdict = 'forward' THEN 'allowed' "
    """WHEN strpos(reasons, '"QUARANTINE"') > 0 AND strpos(reasons, '"MANUAL"') = 0 """
    "THEN 'quarantined' ELSE 'blocked' END"
)
"""The admin list's state of a row in SQL (``association_state``); indexed."""

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1: everything the SQLite schema holds at its version 4, plus the change feed
        """CREATE TABLE associations (
            device_id text COLLATE "C" NOT NULL,
            principal text COLLATE "C" NOT NULL,
            device_type text NOT NULL,
            user_agent text,
            protocol_version text,
            device_info text,
            first_seen double precision NOT NULL,
            last_seen double precision NOT NULL,
            device text,
            unlinked text,
            manual_link text,
            override text,
            verdict text NOT NULL,
            reasons text,
            violations text,
            pool text,
            backend_type text,
            wipe text NOT NULL,
            policy_fingerprint text,
            ambiguous_policy boolean NOT NULL,
            verified_at double precision,
            PRIMARY KEY (device_id, principal)
        )""",
        "CREATE UNIQUE INDEX associations_by_principal ON associations (principal, device_id)",
        f"CREATE INDEX associations_by_state ON associations (({_STATE}), principal, device_id)",
        "CREATE INDEX associations_by_pool ON associations (pool, principal, device_id)",
        "CREATE INDEX associations_by_type ON associations (device_type, principal, device_id)",
        "CREATE INDEX associations_unverified ON associations (principal, device_id) "
        "WHERE verified_at IS NULL",
        "CREATE INDEX associations_never_seen ON associations (principal, device_id) "
        "WHERE last_seen = 0",
        "CREATE INDEX associations_with_reasons ON associations (principal, device_id) "
        "WHERE reasons IS NOT NULL",
        "CREATE TABLE users (name text PRIMARY KEY, data text NOT NULL)",
        "CREATE TABLE devices (name text PRIMARY KEY, data text NOT NULL)",
        "CREATE TABLE pools (name text PRIMARY KEY, data text NOT NULL)",
        "CREATE TABLE exchange_settings (name text PRIMARY KEY, data text NOT NULL)",
        "CREATE TABLE labels (name text PRIMARY KEY, data text NOT NULL)",
        "CREATE TABLE config (name text PRIMARY KEY, data text NOT NULL)",
        "CREATE TABLE established_types (scope text PRIMARY KEY, data text NOT NULL)",
        """CREATE TABLE history (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            device_id text COLLATE "C" NOT NULL,
            principal text COLLATE "C" NOT NULL,
            at double precision NOT NULL,
            kind text NOT NULL,
            detail text NOT NULL
        )""",
        "CREATE INDEX history_by_key ON history (device_id, principal, id)",
        """CREATE TABLE audit (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            at double precision NOT NULL,
            actor text NOT NULL,
            action text NOT NULL,
            target text NOT NULL,
            note text NOT NULL,
            before text,
            after text
        )""",
        "CREATE INDEX audit_by_actor ON audit (actor, id)",
        "CREATE INDEX audit_by_time ON audit (at)",
        """CREATE TABLE change_feed (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            node text NOT NULL,
            at double precision NOT NULL,
            changes text NOT NULL
        )""",
        "CREATE INDEX change_feed_by_time ON change_feed (at)",
        "CREATE TABLE change_feed_pruned (one boolean PRIMARY KEY DEFAULT true CHECK (one), "
        "through bigint NOT NULL)",
        "INSERT INTO change_feed_pruned VALUES (true, 0)",
        "CREATE TABLE store_probe (node text PRIMARY KEY, at double precision NOT NULL)",
    ),
    (  # 2: device access rules: the rule a row matched, the quarantined list state
        "ALTER TABLE associations ADD COLUMN access_rule text",
        "DROP INDEX associations_by_state",
        f"CREATE INDEX associations_by_state ON associations (({STATE_SQL}), principal, device_id)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


class Executor(Protocol):
    """The part of a driver connection ``migrate`` uses (asyncpg's names)."""

    async def execute(self, query: str, *args: object) -> str: ...

    async def fetchval(self, query: str, *args: object) -> Any: ...


async def migrate(conn: Executor) -> int:
    """Bring the schema up to ``SCHEMA_VERSION`` inside the caller's
    transaction; return the version found. ``SchemaError`` when newer."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version "
        "(version integer PRIMARY KEY, applied_at double precision NOT NULL)"
    )
    found = int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version") or 0)
    if found > SCHEMA_VERSION:
        raise SchemaError(f"database schema {found} is newer than this code ({SCHEMA_VERSION})")
    for version in range(found + 1, SCHEMA_VERSION + 1):
        for statement in MIGRATIONS[version - 1]:
            await conn.execute(statement)
        await conn.execute("INSERT INTO schema_version VALUES ($1, $2)", version, time.time())
    return found
