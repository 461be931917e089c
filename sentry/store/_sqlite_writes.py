"""One SQL write per change type (called inside ``SqliteStore.apply``'s transaction).

Approach. A dict maps each change type to a small writer; an unknown type
raises ``TypeError``, which rolls the whole transaction back. Writes are
idempotent upserts or deletes, except the append-only history and audit.
``Touch`` only ever moves ``last_seen`` forward, like ``Snapshot.apply``;
consecutive Touches (the shell's batches) share one ``executemany``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from sentry.policy import changes as ch
from sentry.policy.audit import plain

from ._sqlite_rows import ASSOCIATION_COLUMNS, PLACEHOLDERS, association_params
from .codec import dumps

__all__ = ["write_changes"]


def write_changes(conn: sqlite3.Connection, changes: Sequence[ch.Change]) -> None:
    """Write changes in order; runs of Touches go in one ``executemany``.

    ``TypeError`` if an item is not a change (the caller rolls back).
    """
    touches: list[ch.Touch] = []
    for change in changes:
        if type(change) is ch.Touch:
            touches.append(change)
            continue
        _touch_all(conn, touches)
        writer = _WRITERS.get(type(change))
        if writer is None:
            raise TypeError(f"not a change: {change!r}")
        writer(conn, change)
    _touch_all(conn, touches)


def _touch_all(conn: sqlite3.Connection, touches: list[ch.Touch]) -> None:
    if touches:
        sql = (
            "UPDATE associations SET last_seen = ? "
            "WHERE device_id = ? AND user = ? AND last_seen < ?"
        )
        conn.executemany(sql, ((t.last_seen, *t.key, t.last_seen) for t in touches))
        touches.clear()


def _put_association(conn: sqlite3.Connection, c: ch.PutAssociation) -> None:
    sql = f"INSERT OR REPLACE INTO associations ({ASSOCIATION_COLUMNS}) VALUES ({PLACEHOLDERS})"
    conn.execute(sql, association_params(c.association))


def _delete_association(conn: sqlite3.Connection, c: ch.DeleteAssociation) -> None:
    sql = "DELETE FROM associations WHERE device_id = ? AND user = ?"
    conn.execute(sql, (c.key.device_id, c.key.user))


def _put(table: str, name: str, value: Any, conn: sqlite3.Connection) -> None:
    conn.execute(f"INSERT OR REPLACE INTO {table} (name, data) VALUES (?, ?)", (name, dumps(value)))


def _delete(table: str, name: str, conn: sqlite3.Connection) -> None:
    conn.execute(f"DELETE FROM {table} WHERE name = ?", (name,))


def _put_established(conn: sqlite3.Connection, c: ch.PutEstablished) -> None:
    sql = "INSERT OR REPLACE INTO established_types (scope, data) VALUES (?, ?)"
    conn.execute(sql, (c.established.scope, dumps(c.established)))


def _delete_established(conn: sqlite3.Connection, c: ch.DeleteEstablished) -> None:
    conn.execute("DELETE FROM established_types WHERE scope = ?", (c.scope,))


def _move_history(conn: sqlite3.Connection, c: ch.MoveHistory) -> None:
    sql = "UPDATE history SET device_id = ?, user = ? WHERE device_id = ? AND user = ?"
    conn.execute(sql, (*c.new, *c.old))


def _append_history(conn: sqlite3.Connection, c: ch.AppendHistory) -> None:
    sql = "INSERT INTO history (device_id, user, at, kind, detail) VALUES (?, ?, ?, ?, ?)"
    detail = json.dumps(plain(c.event.detail), separators=(",", ":"))
    conn.execute(sql, (c.key.device_id, c.key.user, c.event.at, c.event.kind, detail))


def _append_audit(conn: sqlite3.Connection, c: ch.AppendAudit) -> None:
    e = c.entry
    sql = (
        "INSERT INTO audit (at, actor, action, target, note, before, after) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)"
    )
    before = None if e.before is None else dumps(e.before)
    after = None if e.after is None else dumps(e.after)
    conn.execute(sql, (e.at, e.actor, e.action, e.target, e.note, before, after))


_Writer = Callable[[sqlite3.Connection, Any], None]
_WRITERS: dict[type[Any], _Writer] = {
    ch.PutAssociation: _put_association,
    ch.DeleteAssociation: _delete_association,
    ch.PutUser: lambda conn, c: _put("users", c.user.principal, c.user, conn),
    ch.DeleteUser: lambda conn, c: _delete("users", c.principal, conn),
    ch.PutDevice: lambda conn, c: _put("devices", c.device.id, c.device, conn),
    ch.DeleteDevice: lambda conn, c: _delete("devices", c.device_id, conn),
    ch.PutPool: lambda conn, c: _put("pools", c.pool.name, c.pool, conn),
    ch.DeletePool: lambda conn, c: _delete("pools", c.name, conn),
    ch.PutSetting: lambda conn, c: _put("exchange_settings", c.setting.name, c.setting, conn),
    ch.DeleteSetting: lambda conn, c: _delete("exchange_settings", c.name, conn),
    ch.PutLabel: lambda conn, c: _put("labels", c.label.name, c.label, conn),
    ch.DeleteLabel: lambda conn, c: _delete("labels", c.name, conn),
    ch.PutRouting: lambda conn, c: _put("config", "routing", c.routing, conn),
    ch.PutPreferences: lambda conn, c: _put("config", "preferences", c.prefs, conn),
    ch.PutRealms: lambda conn, c: _put("config", "realms", c.realms, conn),
    ch.PutAccessRules: lambda conn, c: _put("config", "access_rules", c.rules, conn),
    ch.PutEstablished: lambda conn, c: _put_established(conn, c),
    ch.DeleteEstablished: lambda conn, c: _delete_established(conn, c),
    ch.MoveHistory: _move_history,
    ch.AppendHistory: _append_history,
    ch.AppendAudit: _append_audit,
}
