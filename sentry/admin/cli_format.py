"""Human output of the admin CLI: aligned tables and ``key: value`` records.

Approach. A ``Column`` is a header and a getter; ``table`` renders rows of
API answers under them, ``record`` renders one object as indented
``key: value`` lines (nested objects indented further, lists joined).
``cell`` is the one place that decides how a value reads: ``-`` for none,
``yes``/``no``, lists joined by commas. The ``COLUMNS`` of each list view
live here, next to the formatting they use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["COLUMNS", "Column", "cell", "page_footer", "record", "table"]

Column = tuple[str, Callable[[Mapping[str, Any]], Any]]


def cell(value: Any) -> str:
    """A value as table text."""
    if value is None or value == [] or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ",".join(cell(v) for v in value)
    if isinstance(value, dict):
        return " ".join(f"{k}={cell(v)}" for k, v in value.items())
    return str(value)


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    """Rows under aligned headers (the last column is not padded)."""
    grid = [[h for h, _ in columns]] + [[cell(get(r)) for _, get in columns] for r in rows]
    widths = [max(len(line[i]) for line in grid) for i in range(len(columns))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in grid
    ]
    return "\n".join(lines)


def record(data: Mapping[str, Any], indent: int = 0) -> str:
    """One object as ``key: value`` lines; nested objects and object lists indented."""
    pad, lines = " " * indent, []
    for key, value in data.items():
        if isinstance(value, dict) and value:
            lines += [f"{pad}{key}:", record(value, indent + 2)]
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines.append(f"{pad}{key}:")
            for item in value:
                first, *rest = record(item, indent + 4).split("\n")
                lines += [f"{pad}  - {first.lstrip()}", *rest]
        else:
            lines.append(f"{pad}{key}: {cell(value)}")
    return "\n".join(lines)


def page_footer(page: Mapping[str, Any]) -> str:
    """``rows 1-100 of 2345`` for a paged answer."""
    shown, offset, total = len(page["items"]), page["offset"], page["total"]
    if not shown:
        return f"no rows (total {total})"
    return f"rows {offset + 1}-{offset + shown} of {total}"


def _get(name: str) -> Callable[[Mapping[str, Any]], Any]:
    return lambda row: row.get(name)


def _link(row: Mapping[str, Any]) -> Any:
    return row.get("device") or row.get("unlinked")


def _flags(row: Mapping[str, Any]) -> Any:
    flags = ["unverified"] if row.get("verified") is False else []
    return flags + (["throwaway"] if row.get("throwaway") else [])


COLUMNS: dict[str, list[Column]] = {
    "associations": [
        ("DEVICE ID", _get("device_id")),
        ("USER", _get("user")),
        ("TYPE", _get("device_type")),
        ("STATE", _get("state")),
        ("REASONS", _get("reasons")),
        ("LINK", _link),
        ("POOL", _get("pool")),
        ("FLAGS", _flags),
        ("LAST SEEN", _get("last_seen")),
    ],
    "users": [
        ("PRINCIPAL", _get("principal")),
        ("EMAIL", _get("email")),
        ("NAME", _get("display_name")),
        ("SOURCE", lambda u: u["source"] + (" (missing)" if u.get("missing_since") else "")),
        ("CUSTOM1", _get("custom1")),
        ("CUSTOM2", _get("custom2")),
    ],
    "devices": [
        ("ID", _get("id")),
        ("OWNER", _get("owner")),
        ("PLATFORM", _get("platform")),
        ("EAS DEVICE IDS", _get("eas_device_ids")),
        ("COMPLIANT", _get("compliant")),
        ("VIOLATIONS", _get("violations")),
        ("LABELS", _get("labels")),
        ("RETIRED", _get("retired")),
    ],
    "settings": [
        ("PRIORITY", _get("priority")),
        ("NAME", _get("name")),
        ("USER NAME", _get("user_name")),
        ("EMAIL", _get("email")),
        ("SERVER", _get("server")),
    ],
    "labels": [
        ("NAME", _get("name")),
        ("SETTINGS", _get("settings")),
        ("DEVICES", _get("devices")),
    ],
    "audit": [
        ("AT", _get("at")),
        ("ACTOR", _get("actor")),
        ("ACTION", _get("action")),
        ("TARGET", _get("target")),
        ("NOTE", _get("note")),
    ],
    "rules": [
        ("#", _get("position")),
        ("NAME", _get("name")),
        ("FIELD", _get("field")),
        ("MATCH", _get("match")),
        ("VALUE", _get("value")),
        ("ACTION", _get("action")),
        ("NOTE", _get("note")),
    ],
    "quarantine": [
        ("DEVICE ID", _get("device_id")),
        ("USER", _get("user")),
        ("TYPE", _get("device_type")),
        ("VERSION", _get("protocol_version")),
        ("RULE", _get("access_rule")),
        ("LAST SEEN", _get("last_seen")),
    ],
    "servers": [
        ("POOL", _get("pool")),
        ("TYPE", _get("type")),
        ("SERVER", _get("url")),
        ("STATE", _get("state")),
        ("SINCE", _get("since")),
        ("LAST CHECK", _get("last_check")),
        ("FAILURES", _get("failures")),
        ("REASON", _get("detail")),
    ],
}
"""The columns of each list view."""
