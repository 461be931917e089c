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

On SQLite 3.38 or later each run is one statement instead, over a JSON
array of its rows (``json_each``; ``executemany`` before, and for a run
with a NUL in a text, which SQLite's JSON text functions would cut). The
store's thread runs these writes beside the event loop, and ``executemany``
runs one step per row with the GIL given up around each: beside a busy loop
the thread then waits for the GIL back after every row (up to the
interpreter's switch interval), so a last-seen flush of 1,100 rows took 5 s
instead of 4 ms, and every write behind it in the store's one thread waited
as long (``bench/bench_touchflush.py``; a bulk block of 1,000 rows is 2,001
rows in two runs). ``json_each`` gives the array's items in order and the
``INSERT .. SELECT`` keeps it (``ORDER BY key``): the last put of a key
wins and history and audit keep their order, as with ``executemany``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from sentry.model import AuditEntry, association_ref
from sentry.policy import changes as ch

from ._sqlite_rows import ASSOCIATION_COLUMNS, association_params
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


JSON_RUNS = sqlite3.sqlite_version_info >= (3, 38, 0)
"""``UPDATE .. FROM`` (3.33) and ``->>`` (3.38): a run in one statement."""


def _json_rows(rows: Sequence[Sequence[Any]]) -> str | None:
    """``rows`` as one JSON array for ``json_each``; None when a run must go
    row by row (older SQLite, or a NUL in a text: ``->>`` would cut it)."""
    if not JSON_RUNS:
        return None
    doc = json.dumps(rows, allow_nan=False)
    return None if "\\u0000" in doc else doc


def _selected(width: int) -> str:
    """``value->>0, .., value->>width-1``: one JSON row's items as columns."""
    return ", ".join(f"value->>{i}" for i in range(width))


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
    rows = [(device_id, user, seen) for (device_id, user), seen in latest.items()]
    doc = _json_rows(rows)
    if doc is None:
        conn.executemany(_TOUCH_ROW, ((seen, dev, user, seen) for dev, user, seen in rows))
        return
    conn.execute(_TOUCH_RUN, (doc,))


def _put_associations(conn: sqlite3.Connection, run: Sequence[ch.PutAssociation]) -> None:
    # in order: INSERT OR REPLACE of the same key twice leaves the last, as applying them does
    rows = [association_params(c.association) for c in run]
    _insert_rows(conn, f"INSERT OR REPLACE INTO associations ({ASSOCIATION_COLUMNS})", rows)


def _insert_rows(conn: sqlite3.Connection, head: str, rows: Sequence[Sequence[Any]]) -> None:
    """``head`` (``INSERT .. INTO table (columns)``) for every row, in order."""
    doc = _json_rows(rows)
    width = len(rows[0])
    if doc is None:
        conn.executemany(f"{head} VALUES ({', '.join('?' * width)})", rows)
        return
    conn.execute(f"{head} SELECT {_selected(width)} FROM json_each(?) ORDER BY key", (doc,))


def _delete_associations(conn: sqlite3.Connection, run: Sequence[ch.DeleteAssociation]) -> None:
    rows = [(c.key.device_id, c.key.user) for c in run]
    doc = _json_rows(rows)
    if doc is None:
        sql = "DELETE FROM associations WHERE device_id = ? AND user = ?"
        conn.executemany(sql, rows)
        return
    sql = (
        "DELETE FROM associations WHERE (device_id, user) IN "
        "(SELECT value->>0, value->>1 FROM json_each(?))"
    )
    conn.execute(sql, (doc,))


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
    rows = [_history_params(c) for c in run]
    _insert_rows(conn, "INSERT INTO history (device_id, user, at, kind, detail)", rows)


def _history_params(c: ch.AppendHistory) -> tuple[Any, ...]:
    return (c.key.device_id, c.key.user, c.event.at, c.event.kind, compact(c.event.detail))


def _append_audit(conn: sqlite3.Connection, run: Sequence[ch.AppendAudit]) -> None:
    rows = [_audit_params(c.entry) for c in run]
    _insert_rows(conn, "INSERT INTO audit (at, actor, action, target, note, before, after)", rows)


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
