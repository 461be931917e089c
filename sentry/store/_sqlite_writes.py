"""One SQL write per change type (called inside ``SqliteStore.apply``'s transaction).

Approach. A dict maps each change type to a small writer; an unknown type
raises ``TypeError``, which rolls the whole transaction back. Writes are
idempotent upserts or deletes, except the append-only history and audit.
``Touch`` only ever moves ``last_seen`` forward, like ``Snapshot.apply``.
Runs of consecutive changes of one bulk type (``Touch``, ``PutAssociation``,
``DeleteAssociation``, ``AppendHistory``, ``AppendAudit``) share one
``executemany``, in their order. As in ``_pg_writes``, history and audit
entries are written after the other changes of a list unless it moves
history (nothing else reads or changes them), so a per-row admin action
over many rows (put, history, audit, put, history, audit...) is three
``executemany`` calls, not three statements per row.

A run of ``Touch`` (the batched last-seen times, every
``store.touch_flush_seconds``) is one statement instead, over a JSON array
(``json_each``, SQLite 3.38 or later; ``executemany`` before). The store's
thread runs these writes beside the event loop, and ``executemany`` runs
one step per row with the GIL given up around each: beside a busy loop the
thread then waits for the GIL back after every row (up to the interpreter's
switch interval), so a flush of 1,100 rows took 3.2 s instead of 3.6 ms and
the loop lost its time to the hand-overs (``bench/bench_touchflush.py``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from sentry.model import AuditEntry, association_ref
from sentry.policy import changes as ch

from ._sqlite_rows import ASSOCIATION_COLUMNS, PLACEHOLDERS, association_params
from .codec import compact, dumps

__all__ = ["write_changes"]


def write_changes(conn: sqlite3.Connection, changes: Sequence[ch.Change]) -> None:
    """Write changes in order; runs of one bulk type go in one ``executemany``
    (appends last unless the list moves history: see the module comment).

    ``TypeError`` if an item is not a change (the caller rolls back).
    """
    for change in changes:
        if type(change) not in _WRITERS and type(change) not in _RUNS:
            raise TypeError(f"not a change: {change!r}")
    if any(type(c) is ch.MoveHistory for c in changes):
        _write_runs(conn, changes)
        return
    _write_runs(conn, [c for c in changes if type(c) not in _APPENDS])
    _write_runs(conn, [c for c in changes if type(c) is ch.AppendHistory])
    _write_runs(conn, [c for c in changes if type(c) is ch.AppendAudit])


def _write_runs(conn: sqlite3.Connection, changes: Sequence[ch.Change]) -> None:
    i, n = 0, len(changes)
    while i < n:
        kind = type(changes[i])
        run = _RUNS.get(kind)
        if run is None:
            _WRITERS[kind](conn, changes[i])
            i += 1
            continue
        j = i + 1
        while j < n and type(changes[j]) is kind:
            j += 1
        run(conn, changes[i:j])
        i = j


JSON_TOUCHES = sqlite3.sqlite_version_info >= (3, 38, 0)
"""``UPDATE .. FROM`` (3.33) and ``->>`` (3.38): a run of touches in one statement."""

_TOUCH_ROW = (
    "UPDATE associations SET last_seen = ? WHERE device_id = ? AND user = ? AND last_seen < ?"
)
_TOUCH_RUN = (
    "UPDATE associations SET last_seen = t.s"
    " FROM (SELECT value->>0 AS d, value->>1 AS u, value->>2 AS s FROM json_each(?)) AS t"
    " WHERE associations.device_id = t.d AND associations.user = t.u"
    " AND associations.last_seen < t.s"
)


def _touch_all(conn: sqlite3.Connection, touches: Sequence[ch.Touch]) -> None:
    # the latest per key: an UPDATE .. FROM joining a key twice takes either row
    latest: dict[tuple[str, str], float] = {}
    for t in touches:
        if t.key not in latest or t.last_seen > latest[t.key]:
            latest[t.key] = t.last_seen
    if not JSON_TOUCHES:
        conn.executemany(_TOUCH_ROW, ((seen, *key, seen) for key, seen in latest.items()))
        return
    rows = [[device_id, user, seen] for (device_id, user), seen in latest.items()]
    conn.execute(_TOUCH_RUN, (json.dumps(rows, allow_nan=False),))


def _put_associations(conn: sqlite3.Connection, run: Sequence[ch.PutAssociation]) -> None:
    # in order: INSERT OR REPLACE of the same key twice leaves the last, as applying them does
    sql = f"INSERT OR REPLACE INTO associations ({ASSOCIATION_COLUMNS}) VALUES ({PLACEHOLDERS})"
    conn.executemany(sql, (association_params(c.association) for c in run))


def _delete_associations(conn: sqlite3.Connection, run: Sequence[ch.DeleteAssociation]) -> None:
    sql = "DELETE FROM associations WHERE device_id = ? AND user = ?"
    conn.executemany(sql, ((c.key.device_id, c.key.user) for c in run))


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


def _append_history(conn: sqlite3.Connection, run: Sequence[ch.AppendHistory]) -> None:
    sql = "INSERT INTO history (device_id, user, at, kind, detail) VALUES (?, ?, ?, ?, ?)"
    conn.executemany(sql, (_history_params(c) for c in run))


def _history_params(c: ch.AppendHistory) -> tuple[Any, ...]:
    return (c.key.device_id, c.key.user, c.event.at, c.event.kind, compact(c.event.detail))


def _append_audit(conn: sqlite3.Connection, run: Sequence[ch.AppendAudit]) -> None:
    sql = (
        "INSERT INTO audit (at, actor, action, target, note, before, after) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)"
    )
    conn.executemany(sql, (_audit_params(c.entry) for c in run))


def _audit_params(e: AuditEntry) -> tuple[Any, ...]:
    before = None if e.before is None else dumps(e.before)
    after = None if e.after is None else dumps(e.after)
    return (e.at, e.actor, e.action, e.target, e.note, before, after)


_Writer = Callable[[sqlite3.Connection, Any], None]
_Run = Callable[[sqlite3.Connection, Sequence[Any]], None]
_RUNS: dict[type[Any], _Run] = {
    ch.PutAssociation: _put_associations,
    ch.DeleteAssociation: _delete_associations,
    ch.Touch: _touch_all,
    ch.AppendHistory: _append_history,
    ch.AppendAudit: _append_audit,
}
_APPENDS = (ch.AppendHistory, ch.AppendAudit)
_WRITERS: dict[type[Any], _Writer] = {
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
    ch.PutEasPolicy: lambda conn, c: _put("eas_policies", c.policy.name, c.policy, conn),
    ch.DeleteEasPolicy: lambda conn, c: _delete("eas_policies", c.name, conn),
    ch.PutPolicyAssignments: lambda conn, c: _put(
        "config", "policy_assignments", c.assignments, conn
    ),
    ch.PutProvision: lambda conn, c: _put(
        "provisioning", association_ref(c.record.key), c.record, conn
    ),
    ch.DeleteProvision: lambda conn, c: _delete("provisioning", association_ref(c.key), conn),
    ch.MoveHistory: _move_history,
}
