r"""The SQLite schema as numbered migrations, applied in one transaction at open.

Approach. ``MIGRATIONS[n - 1]`` holds the steps that bring the schema
from version n-1 to n: SQL statements, or functions of the connection for a
data migration that SQL alone says badly. ``migrate`` creates ``schema_version`` if needed,
reads the highest applied version, refuses a database newer than this code,
and applies the missing migrations inside ``BEGIN IMMEDIATE .. COMMIT``
(SQLite DDL is transactional), recording each in ``schema_version``. Never
edit a released migration: append a new one.

Associations are flat columns (fast bulk load); registry and configuration
values are JSON documents keyed by name (new optional fields need no
migration); history and audit are append-only tables.

Migration 4 (realms, verification, established backend types): the user
part of a key keeps its realm. Versions 1-3 keyed a row by the bare account
name and kept the domain the client last sent in ``domain``; the migration
writes that domain back into the key (``john`` + ``corp.example`` ->
``john@corp.example``; a dotless domain was a NetBIOS name -> ``corp\john``),
moves the history with it, and clears ``domain`` (no longer used: the route
follows from the key). At the next start the gateway re-keys these names
under the configured realms (``policy.rekey.realm_changes``). Rows from
before are taken as verified (the gateway cannot know) since their first
sight; their devices' established backend types are derived at that start
(``policy.established.missing_types``).

Migration 5 (compliance vocabulary): a device's free-text violations become
``{"kind", "detail"}`` values of ``sentry.compliance`` (known spellings
mapped, anything else ``other`` with the text as detail), an association's
recorded violations their kinds.

Migration 6 (device access rules): an association records the name of the
device access rule that matched its last decision (``access_rule``). The
rules themselves are a configuration document (``config``, name
``access_rules``): they need no table.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable

from sentry.compliance import violation_from_text

from .base import SchemaError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate"]

Step = str | Callable[[sqlite3.Connection], None]


def _admin_set_preferences(conn: sqlite3.Connection) -> None:
    """Record which stored preferences an administrator set (``admin_set``).

    Before, stored preferences won over the file as a whole once they differed
    from the defaults, although the file's own values were stored too. The
    audit log tells them apart: every administrator's ``set_preferences`` is in
    it with its before and after; the file's values never are.
    """
    row = conn.execute("SELECT data FROM config WHERE name = 'preferences'").fetchone()
    if row is None:
        return
    doc = json.loads(row[0])
    names: set[str] = set()
    audit = conn.execute("SELECT before, after FROM audit WHERE action = 'set_preferences'")
    for before, after in audit:
        old, new = json.loads(before or "{}"), json.loads(after or "{}")
        names |= {k for k in new if old.get(k) != new.get(k)}
    doc["admin_set"] = sorted((names & doc.keys()) - {"admin_set"})
    text = json.dumps(doc, separators=(",", ":"), sort_keys=True)
    conn.execute("UPDATE config SET data = ? WHERE name = 'preferences'", (text,))


def _violation_vocabulary(conn: sqlite3.Connection) -> None:
    """Free-text violations become the vocabulary (``sentry.compliance``).

    A device's violations were strings; each becomes ``{"kind", "detail"}``
    through ``violation_from_text`` (a known spelling gives its kind and keeps
    the text as detail when it said more; anything else is ``other`` with the
    text). An association's recorded violations become the kinds.
    """
    devices = conn.execute("SELECT name, data FROM devices").fetchall()
    for name, data in devices:
        doc = json.loads(data)
        texts = [v for v in doc.get("violations", ()) if isinstance(v, str)]
        if not texts:
            continue
        found = {violation_from_text(t) for t in texts}
        doc["violations"] = [{"kind": v.kind.value, "detail": v.detail} for v in sorted(found)]
        text = json.dumps(doc, separators=(",", ":"), sort_keys=True)
        conn.execute("UPDATE devices SET data = ? WHERE name = ?", (text, name))
    rows = conn.execute(
        "SELECT DISTINCT violations FROM associations WHERE violations IS NOT NULL"
    ).fetchall()
    for (old,) in rows:
        kinds = sorted({violation_from_text(t).kind.value for t in json.loads(old)})
        new = json.dumps(kinds, separators=(",", ":")) if kinds else None
        conn.execute("UPDATE associations SET violations = ? WHERE violations = ?", (new, old))


_DOCUMENT_TABLES = ("users", "devices", "pools", "exchange_settings", "labels", "config")
_V1_KEY = (
    "CASE WHEN domain IS NULL OR domain = '' THEN user "
    "WHEN instr(domain, '.') > 0 THEN user || '@' || domain "
    "ELSE domain || '\\' || user END"
)

MIGRATIONS: tuple[tuple[Step, ...], ...] = (
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
    # 2: preferences record which ones an administrator set (they win over the file).
    (_admin_set_preferences,),
    # 3: Exchange settings get a priority; existing ones keep the order they applied
    # in before (by name: 1, 2, 3, ... in the names' code point order).
    (
        """UPDATE exchange_settings SET data = json_set(data, '$.priority', (
            SELECT ranked.n FROM (
                SELECT name, row_number() OVER (ORDER BY name) AS n FROM exchange_settings
            ) AS ranked WHERE ranked.name = exchange_settings.name
        )) WHERE json_extract(data, '$.priority') IS NULL""",
    ),
    # 4: realms kept in keys, verification, established backend types.
    (
        "ALTER TABLE associations ADD COLUMN verified_at REAL",
        "UPDATE associations SET verified_at = first_seen",
        f"""UPDATE history SET user = (
            SELECT {_V1_KEY} FROM associations a
            WHERE a.device_id = history.device_id AND a.user = history.user)
        WHERE EXISTS (
            SELECT 1 FROM associations a
            WHERE a.device_id = history.device_id AND a.user = history.user
            AND a.domain IS NOT NULL AND a.domain != '')""",
        f"UPDATE OR IGNORE associations SET user = {_V1_KEY}, domain = NULL "
        "WHERE domain IS NOT NULL",
        "CREATE TABLE established_types (scope TEXT PRIMARY KEY, data TEXT NOT NULL) WITHOUT ROWID",
    ),
    # 5: compliance violations as a vocabulary (kind + detail).
    (_violation_vocabulary,),
    # 6: the device access rule an association's last decision matched.
    ("ALTER TABLE associations ADD COLUMN access_rule TEXT",),
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
            for step in MIGRATIONS[version - 1]:
                if isinstance(step, str):
                    conn.execute(step)
                else:
                    step(conn)
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
