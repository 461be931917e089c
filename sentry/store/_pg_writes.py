"""SQL writes per change type (called inside ``PostgresStore.apply``'s transaction).

Approach. Like ``_sqlite_writes``: a dict maps each change type to a writer;
an unknown type raises ``TypeError`` before anything is sent (the whole list
is checked first), so a bad list never opens a transaction. Runs of
consecutive changes of one bulk type are written as one statement over
arrays (``unnest``), which keeps a bulk block of thousands of rows or a
flush of thousands of Touches at a few round trips:

- ``PutAssociation``: one upsert; within a run the last row per key wins
  (a run holds only puts, so that is what applying them in order gives);
- ``Touch``: one ``UPDATE .. FROM unnest``, ``last_seen`` only ever moving
  forward (the largest per key);
- ``DeleteAssociation``, ``AppendHistory`` and ``AppendAudit``: one
  statement each (history and audit keep their order: ``WITH ORDINALITY``);
- appends are written after the other changes of a list (unless it moves
  history), so interleaved per-row changes still make a few statements.

Everything else is one statement per change; registry and configuration
values are the same JSON documents as in SQLite (``codec.dumps``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from sentry.model import association_ref
from sentry.policy import changes as ch

from ._pg_rows import UPSERT, column_arrays, key_arrays
from .codec import compact, dumps

__all__ = ["Connection", "check_changes", "write_changes"]


class Connection(Protocol):
    """What the writers use of a driver connection (asyncpg's names)."""

    async def execute(self, query: str, *args: Any) -> str: ...


def check_changes(changes: Sequence[ch.Change]) -> None:
    """``TypeError`` unless every item is a change this store writes."""
    for change in changes:
        if type(change) not in _WRITERS and type(change) not in _RUNS:
            raise TypeError(f"not a change: {change!r}")


async def write_changes(conn: Connection, changes: Sequence[ch.Change]) -> None:
    """Write ``changes`` in order (runs of one bulk type as one statement).

    History and audit entries are only ever appended, and nothing else in a
    list reads or changes them except ``MoveHistory``: without one, they are
    written after the rest (each kind in its own order), so a per-row admin
    action over many rows (put, history, audit, put, history, audit...)
    costs a few statements, not three per row."""
    if not any(type(c) is ch.MoveHistory for c in changes):
        rest = [c for c in changes if type(c) not in _APPENDS]
        await _write_runs(conn, rest)
        await _write_runs(conn, [c for c in changes if type(c) is ch.AppendHistory])
        await _write_runs(conn, [c for c in changes if type(c) is ch.AppendAudit])
        return
    await _write_runs(conn, changes)


async def _write_runs(conn: Connection, changes: Sequence[ch.Change]) -> None:
    i = 0
    while i < len(changes):
        kind = type(changes[i])
        run = _RUNS.get(kind)
        if run is None:
            await _WRITERS[kind](conn, changes[i])
            i += 1
            continue
        j = i
        while j < len(changes) and type(changes[j]) is kind:
            j += 1
        await run(conn, changes[i:j])
        i = j


async def _put_associations(conn: Connection, run: Sequence[Any]) -> None:
    last = {c.association.key: c.association for c in run}
    await conn.execute(UPSERT, *column_arrays(last.values()))


async def _delete_associations(conn: Connection, run: Sequence[Any]) -> None:
    devices, users = key_arrays([c.key for c in run])
    await conn.execute(
        "DELETE FROM associations a USING unnest($1::text[], $2::text[]) AS k(d, u) "
        "WHERE a.device_id = k.d AND a.principal = k.u",
        devices,
        users,
    )


async def _touch(conn: Connection, run: Sequence[Any]) -> None:
    latest: dict[Any, float] = {}
    for t in run:
        if t.last_seen > latest.get(t.key, float("-inf")):
            latest[t.key] = t.last_seen
    devices, users = key_arrays(list(latest))
    await conn.execute(
        "UPDATE associations a SET last_seen = t.s "
        "FROM unnest($1::text[], $2::text[], $3::float8[]) AS t(d, u, s) "
        "WHERE a.device_id = t.d AND a.principal = t.u AND a.last_seen < t.s",
        devices,
        users,
        list(latest.values()),
    )


async def _append_history(conn: Connection, run: Sequence[Any]) -> None:
    devices, users = key_arrays([c.key for c in run])
    details = [compact(c.event.detail) for c in run]
    await conn.execute(
        "INSERT INTO history (device_id, principal, at, kind, detail) "
        "SELECT d, u, a, k, x FROM unnest($1::text[], $2::text[], $3::float8[], "
        "$4::text[], $5::text[]) WITH ORDINALITY AS h(d, u, a, k, x, n) ORDER BY n",
        devices,
        users,
        [c.event.at for c in run],
        [c.event.kind for c in run],
        details,
    )


def _put(table: str, name: Callable[[Any], str], value: Callable[[Any], Any]) -> _Writer:
    sql = (
        f"INSERT INTO {table} (name, data) VALUES ($1, $2) "
        "ON CONFLICT (name) DO UPDATE SET data = EXCLUDED.data"
    )
    return lambda conn, c: conn.execute(sql, name(c), dumps(value(c)))


def _delete(table: str, name: Callable[[Any], str]) -> _Writer:
    sql = f"DELETE FROM {table} WHERE name = $1"
    return lambda conn, c: conn.execute(sql, name(c))


async def _put_established(conn: Connection, c: ch.PutEstablished) -> None:
    await conn.execute(
        "INSERT INTO established_types (scope, data) VALUES ($1, $2) "
        "ON CONFLICT (scope) DO UPDATE SET data = EXCLUDED.data",
        c.established.scope,
        dumps(c.established),
    )


async def _delete_established(conn: Connection, c: ch.DeleteEstablished) -> None:
    await conn.execute("DELETE FROM established_types WHERE scope = $1", c.scope)


async def _move_history(conn: Connection, c: ch.MoveHistory) -> None:
    await conn.execute(
        "UPDATE history SET device_id = $1, principal = $2 WHERE device_id = $3 AND principal = $4",
        *c.new,
        *c.old,
    )


async def _append_audit(conn: Connection, run: Sequence[Any]) -> None:
    entries = [c.entry for c in run]
    await conn.execute(
        "INSERT INTO audit (at, actor, action, target, note, before, after) "
        "SELECT a, w, x, t, n, b, f FROM unnest($1::float8[], $2::text[], $3::text[], "
        "$4::text[], $5::text[], $6::text[], $7::text[]) WITH ORDINALITY "
        "AS e(a, w, x, t, n, b, f, i) ORDER BY i",
        [e.at for e in entries],
        [e.actor for e in entries],
        [e.action for e in entries],
        [e.target for e in entries],
        [e.note for e in entries],
        [None if e.before is None else dumps(e.before) for e in entries],
        [None if e.after is None else dumps(e.after) for e in entries],
    )


_Writer = Callable[[Connection, Any], Awaitable[Any]]
_Run = Callable[[Connection, Sequence[Any]], Awaitable[None]]
_RUNS: dict[type[Any], _Run] = {
    ch.PutAssociation: _put_associations,
    ch.DeleteAssociation: _delete_associations,
    ch.Touch: _touch,
    ch.AppendHistory: _append_history,
    ch.AppendAudit: _append_audit,
}
_APPENDS = (ch.AppendHistory, ch.AppendAudit)
_WRITERS: dict[type[Any], _Writer] = {
    ch.PutUser: _put("users", lambda c: c.user.principal, lambda c: c.user),
    ch.DeleteUser: _delete("users", lambda c: c.principal),
    ch.PutDevice: _put("devices", lambda c: c.device.id, lambda c: c.device),
    ch.DeleteDevice: _delete("devices", lambda c: c.device_id),
    ch.PutPool: _put("pools", lambda c: c.pool.name, lambda c: c.pool),
    ch.DeletePool: _delete("pools", lambda c: c.name),
    ch.PutSetting: _put("exchange_settings", lambda c: c.setting.name, lambda c: c.setting),
    ch.DeleteSetting: _delete("exchange_settings", lambda c: c.name),
    ch.PutLabel: _put("labels", lambda c: c.label.name, lambda c: c.label),
    ch.DeleteLabel: _delete("labels", lambda c: c.name),
    ch.PutRouting: _put("config", lambda c: "routing", lambda c: c.routing),
    ch.PutPreferences: _put("config", lambda c: "preferences", lambda c: c.prefs),
    ch.PutRealms: _put("config", lambda c: "realms", lambda c: c.realms),
    ch.PutAccessRules: _put("config", lambda c: "access_rules", lambda c: c.rules),
    ch.PutEstablished: _put_established,
    ch.DeleteEstablished: _delete_established,
    ch.PutEasPolicy: _put("eas_policies", lambda c: c.policy.name, lambda c: c.policy),
    ch.DeleteEasPolicy: _delete("eas_policies", lambda c: c.name),
    ch.PutPolicyAssignments: _put(
        "config", lambda c: "policy_assignments", lambda c: c.assignments
    ),
    ch.PutProvision: _put(
        "provisioning", lambda c: association_ref(c.record.key), lambda c: c.record
    ),
    ch.DeleteProvision: _delete("provisioning", lambda c: association_ref(c.key)),
    ch.MoveHistory: _move_history,
}
