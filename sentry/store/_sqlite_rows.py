"""Association rows <-> SQLite columns, document tables, and list filters.

Approach. ``association_params`` flattens a row into the column order of
``ASSOCIATION_COLUMNS``; ``association_decoder`` returns the inverse, a
closure over one ``Interner`` so a bulk load shares every repeated value
(device types, user agents, pools, reason sets...) and reuses the DeviceId
string of consecutive rows (the table is read in primary-key order). The
nine DeviceInformation fields travel as one unit-separated column (one
column to fetch instead of nine). The per-row work is a few dict lookups and
one generated constructor call.
``where_clause`` turns an ``AssociationFilter`` into SQL with the same
meaning as ``AssociationFilter.matches``.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Callable, Mapping
from typing import Any

from sentry.model import (
    THROWAWAY_DEVICE_IDS,
    Association,
    AssociationKey,
    Device,
    DeviceInformation,
    ExchangeSetting,
    Label,
    Pool,
    UnlinkCause,
    User,
    Verdict,
    WipeStatus,
    canonical_device_id,
)
from sentry.policy._fast import fast_constructor

from .base import AssociationFilter
from .codec import DECODERS, Interner, decode_override, encode_override, encode_set

__all__ = [
    "ASSOCIATION_COLUMNS",
    "OBJECT_TABLES",
    "PLACEHOLDERS",
    "association_decoder",
    "association_params",
    "encode_info",
    "load_objects",
    "where_clause",
]

_COLUMNS = (  # the column ``domain`` (schema 1) is no longer read or written
    *("device_id", "user", "device_type", "user_agent", "protocol_version"),
    *("device_info", "first_seen", "last_seen", "device", "unlinked", "manual_link"),
    *("override", "verdict", "reasons", "violations", "pool", "backend_type", "wipe"),
    *("policy_fingerprint", "ambiguous_policy", "verified_at", "access_rule"),
)
ASSOCIATION_COLUMNS = ", ".join(_COLUMNS)
PLACEHOLDERS = ", ".join("?" * len(_COLUMNS))
_SEP = "\x1f"  # ASCII unit separator: DeviceInformation never contains one (model.py)
_INFO_FIELDS = tuple(f.name for f in dataclasses.fields(DeviceInformation))
_new_association = fast_constructor(Association)
_new_info = fast_constructor(DeviceInformation)

OBJECT_TABLES: Mapping[str, type[Any]] = {
    "users": User,
    "devices": Device,
    "pools": Pool,
    "exchange_settings": ExchangeSetting,
    "labels": Label,
}
"""Document table -> the model type stored in it (keyed by its name/id/principal)."""


def association_params(row: Association) -> tuple[Any, ...]:
    """The column values of ``row``, in ``ASSOCIATION_COLUMNS`` order."""
    return (
        *(row.key.device_id, row.key.user, row.device_type),
        *(row.user_agent, row.protocol_version, encode_info(row.device_info)),
        *(row.first_seen, row.last_seen, row.device, _value(row.unlinked), row.manual_link),
        *(encode_override(row.override), row.verdict.value, encode_set(row.reasons)),
        *(encode_set(row.violations), row.pool, row.backend_type, row.wipe.value),
        *(row.policy_fingerprint, int(row.ambiguous_policy), row.verified_at),
        row.access_rule,
    )


def encode_info(info: DeviceInformation | None) -> str | None:
    """The nine fields joined by the unit separator ("" for an absent field)."""
    if info is None:
        return None
    return _SEP.join(getattr(info, name) or "" for name in _INFO_FIELDS)


def _value(item: UnlinkCause | None) -> str | None:
    return None if item is None else item.value


def association_decoder() -> Callable[[tuple[Any, ...]], Association]:
    """A row decoder sharing repeated values across the rows it decodes.

    Written for speed (it runs a million times at start): local names only,
    the string table's ``setdefault`` called directly (``None`` maps to
    itself), rows rebuilt by ``fast_constructor`` (they were validated when
    first made).
    """
    interner = Interner()
    share, reasons, violations = interner.share, interner.reasons, interner.violations
    unlinked: dict[str | None, UnlinkCause | None] = {None: None, **{c: c for c in UnlinkCause}}
    verdicts = {v.value: v for v in Verdict}
    wipes = {w.value: w for w in WipeStatus}
    new, new_key, new_info, last = _new_association, AssociationKey, _new_info, [""]

    def info(packed: str) -> DeviceInformation:
        model, imei, name, os, lang, phone, agent, sms, operator = packed.split(_SEP)
        return new_info(
            share(model, model) or None, imei or None, name or None, share(os, os) or None,
            share(lang, lang) or None, phone or None, share(agent, agent) or None,
            share(sms, sms) or None, share(operator, operator) or None,
        )  # fmt: skip

    def decode(r: tuple[Any, ...]) -> Association:
        device_id = r[0]
        if device_id == last[0]:
            device_id = last[0]  # consecutive rows of one DeviceId share the string
        else:
            last[0] = device_id
        return new(
            new_key(device_id, r[1]), share(r[2], r[2]), share(r[3], r[3]),
            share(r[4], r[4]), None if r[5] is None else info(r[5]),
            r[6], r[7], r[8], unlinked[r[9]], r[10],
            None if r[11] is None else decode_override(r[11]),
            verdicts[r[12]], reasons[r[13]], violations[r[14]], share(r[15], r[15]),
            share(r[16], r[16]), wipes[r[17]], share(r[18], r[18]), r[19] == 1, r[20],
            share(r[21], r[21]),
        )  # fmt: skip

    return decode


def load_objects(conn: sqlite3.Connection) -> dict[str, list[Any]]:
    """Every document table decoded into model values."""
    out: dict[str, list[Any]] = {}
    for table, kind in OBJECT_TABLES.items():
        decode = DECODERS[kind]
        # One JSON array built by SQLite, parsed in one call: far cheaper than
        # one json.loads per document when there are 100k of them.
        (array,) = conn.execute(f"SELECT json_group_array(json(data)) FROM {table}").fetchone()
        out[table] = [decode(doc) for doc in json.loads(array)]
    return out


_STATE_SQL = (
    "CASE WHEN wipe IN ('pending', 'failed') THEN 'wipe_pending' "
    "WHEN wipe = 'wiped' THEN 'wiped' "
    "WHEN verdict = 'forward' THEN 'allowed' "
    """WHEN instr(reasons, '"QUARANTINE"') > 0 AND instr(reasons, '"MANUAL"') = 0 """
    "THEN 'quarantined' ELSE 'blocked' END"
)


def where_clause(f: AssociationFilter | None) -> tuple[str, list[Any]]:
    """``WHERE ...`` and its parameters for a filter ("" when nothing filters)."""
    if f is None:
        return "", []
    tests: list[tuple[str, Any]] = []
    if f.user is not None:
        tests.append(("user = ?", f.user))
    if f.device_id is not None:
        tests.append(("device_id = ?", canonical_device_id(f.device_id)))
    if f.device_type is not None:
        tests.append(("device_type = ?", f.device_type))
    if f.state is not None:
        tests.append((f"{_STATE_SQL} = ?", f.state.value))
    if f.reason is not None:
        tests.append(("instr(reasons, ?) > 0", json.dumps(f.reason.value)))
    if f.linked is not None:
        tests.append(("device IS NOT NULL" if f.linked else "device IS NULL", None))
    if f.pool is not None:
        tests.append(("pool = ?", f.pool))
    if f.verified is not None:
        tests.append(("verified_at IS NOT NULL" if f.verified else "verified_at IS NULL", None))
    if f.throwaway is not None:
        ids = ", ".join(f"'{i}'" for i in sorted(THROWAWAY_DEVICE_IDS))  # constants, not input
        tests.append((f"device_id {'' if f.throwaway else 'NOT '}IN ({ids})", None))
    if f.never_seen is not None:
        tests.append(("last_seen = 0" if f.never_seen else "last_seen <> 0", None))
    if f.violation is not None:  # a JSON array of kinds: an exact element, not a substring
        tests.append(("instr(violations, ?) > 0", json.dumps(f.violation)))
    if not tests:
        return "", []
    where = "WHERE " + " AND ".join(sql for sql, _ in tests)
    return where, [value for sql, value in tests if "?" in sql]
