"""The SQLite schema as numbered migrations, applied in one transaction at open.

Approach. ``MIGRATIONS[n - 1]`` holds the statements that bring the schema
from version n-1 to n. ``migrate`` creates ``schema_version`` if needed,
reads the highest applied version, refuses a database newer than this code,
and applies the missing migrations inside ``BEGIN IMMEDIATE .. COMMIT``
(SQLite DDL is transactional), recording each in ``schema_version``. Never
edit a released migration: append a new one.

Associations are flat columns (fast bulk load); registry and configuration
values are JSON documents keyed by name (new optional fields need no
migration); history and audit are append-only tables.
"""

from __future__ import annotations

import sqlite3
import time

from .base import SchemaError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate"]

_DOCUMENT_TABLES = ("users", "devices", "pools", "exchange_settings", "labels", "config")

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the initial schema.
    (
        """CREATE TABLE associations (
            device_id TEXT NOT NULL,
            user TEXT NOT NULL,
            domain TEXT,
            device_type TEXT NOT NULL,
            user_agent TEXT,
            protocol_version TEXT,
            device_info TEXT,  -- the 9 DeviceInformation fields, unit-separated
            first_seen REAL NOT NULL,
            last_seen REAL NOT NULL,
            device TEXT,
            unlinked TEXT,
            manual_link TEXT,
            override TEXT,
            verdict TEXT NOT NULL,
            reasons TEXT,  -- JSON array; NULL when empty
            violations TEXT,  -- JSON array; NULL when empty
            pool TEXT,
            backend_type TEXT,
            wipe TEXT NOT NULL,
            policy_fingerprint TEXT,
            ambiguous_policy INTEGER NOT NULL,
            PRIMARY KEY (device_id, user)
        ) WITHOUT ROWID""",
        "CREATE INDEX associations_by_user ON associations (user, device_id)",
        *(
            f"CREATE TABLE {table} (name TEXT PRIMARY KEY, data TEXT NOT NULL) WITHOUT ROWID"
            for table in _DOCUMENT_TABLES
        ),
        """CREATE TABLE history (
            id INTEGER PRIMARY KEY,
            device_id TEXT NOT NULL,
            user TEXT NOT NULL,
            at REAL NOT NULL,
            kind TEXT NOT NULL,
            detail TEXT NOT NULL
        )""",
        "CREATE INDEX history_by_key ON history (device_id, user, id)",
        """CREATE TABLE audit (
            id INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT NOT NULL,
            note TEXT NOT NULL,
            before TEXT,
            after TEXT
        )""",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to ``SCHEMA_VERSION``; return the version found."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = _current_version(conn)
        if found > SCHEMA_VERSION:
            raise SchemaError(f"database schema {found} is newer than this code ({SCHEMA_VERSION})")
        for version in range(found + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version - 1]:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version VALUES (?, ?)", (version, time.time()))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # SQLite rolls back by itself after some errors
            conn.execute("ROLLBACK")
        raise
    return found


def _current_version(conn: sqlite3.Connection) -> int:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version "
        "(version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
    )
    row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
    return int(row[0])
