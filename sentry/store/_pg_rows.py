"""Association rows <-> PostgreSQL columns, and the admin list's SQL.

Approach. The column order and the row format are SQLite's
(``_sqlite_rows``): ``association_params`` flattens a row and
``association_decoder`` rebuilds it, so the two stores and the change feed
share one codec. Only ``ambiguous_policy`` differs (a ``boolean`` column
here; the decoder's ``== 1`` reads ``True`` as well). ``where_clause`` turns an
``AssociationFilter`` into SQL with the same meaning as
``AssociationFilter.matches``, with ``$n`` parameters numbered from a given
start; each test is written so an index of the schema can serve it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from sentry.model import THROWAWAY_DEVICE_IDS, Association, canonical_device_id

from ._pg_schema import STATE_SQL
from ._sqlite_rows import association_params
from .base import AssociationFilter

__all__ = [
    "COLUMNS",
    "COLUMN_NAMES",
    "UPSERT",
    "column_arrays",
    "key_arrays",
    "row_params",
    "where_clause",
]

COLUMN_NAMES = (
    *("device_id", "principal", "device_type", "user_agent", "protocol_version"),
    *("device_info", "first_seen", "last_seen", "device", "unlinked", "manual_link"),
    *("override", "verdict", "reasons", "violations", "pool", "backend_type", "wipe"),
    *("policy_fingerprint", "ambiguous_policy", "verified_at", "access_rule"),
)
COLUMNS = ", ".join(COLUMN_NAMES)
_ARRAY_TYPES = (
    *("text",) * 6, "float8", "float8", *("text",) * 11, "bool", "float8", "text",
)  # fmt: skip
_AMBIGUOUS = COLUMN_NAMES.index("ambiguous_policy")

UPSERT = (
    f"INSERT INTO associations ({COLUMNS}) SELECT * FROM unnest("
    + ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(_ARRAY_TYPES))
    + ") ON CONFLICT (device_id, principal) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMN_NAMES[2:])
)
"""Insert or replace many rows in one statement: one array per column."""


def row_params(row: Association) -> tuple[Any, ...]:
    """The column values of ``row`` in ``COLUMN_NAMES`` order."""
    params = list(association_params(row))
    params[_AMBIGUOUS] = bool(params[_AMBIGUOUS])
    return tuple(params)


def column_arrays(rows: Iterable[Association]) -> list[list[Any]]:
    """``UPSERT``'s parameters: the rows turned into one list per column."""
    flat = [row_params(r) for r in rows]
    return [[r[i] for r in flat] for i in range(len(COLUMN_NAMES))]


_THROWAWAY = "ARRAY[" + ", ".join(f"'{i}'" for i in sorted(THROWAWAY_DEVICE_IDS)) + "]"


def where_clause(f: AssociationFilter | None, start: int = 1) -> tuple[str, list[Any]]:
    """``WHERE ...`` and its parameters ($``start`` on; "" when nothing filters)."""
    if f is None:
        return "", []
    tests: list[str] = []
    params: list[Any] = []

    def param(value: Any) -> str:
        params.append(value)
        return f"${start + len(params) - 1}"

    if f.user is not None:
        tests.append(f"principal = {param(f.user)}")
    if f.device_id is not None:
        tests.append(f"device_id = {param(canonical_device_id(f.device_id))}")
    if f.device_type is not None:
        tests.append(f"device_type = {param(f.device_type)}")
    if f.state is not None:
        tests.append(f"({STATE_SQL}) = {param(f.state.value)}")
    if f.reason is not None:
        tests.append(f"strpos(reasons, {param(json.dumps(f.reason.value))}) > 0")
    if f.linked is not None:
        tests.append("device IS NOT NULL" if f.linked else "device IS NULL")
    if f.pool is not None:
        tests.append(f"pool = {param(f.pool)}")
    if f.verified is not None:
        tests.append("verified_at IS NOT NULL" if f.verified else "verified_at IS NULL")
    if f.throwaway is not None:
        tests.append(f"{'' if f.throwaway else 'NOT '}(device_id = ANY({_THROWAWAY}))")
    if f.never_seen is not None:
        tests.append("last_seen = 0" if f.never_seen else "last_seen <> 0")
    if f.violation is not None:  # a JSON array of kinds: an exact element, not a substring
        tests.append(f"strpos(violations, {param(json.dumps(f.violation))}) > 0")
    return ("WHERE " + " AND ".join(tests) if tests else ""), params


def key_arrays(keys: Sequence[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """Two parallel arrays (DeviceIds, principals) for ``unnest``."""
    return [k[0] for k in keys], [k[1] for k in keys]
