"""Streamed answers: the association list as CSV or JSON, and a database backup.

Approach. A handler returns a ``Stream`` (media type, file name, an async
iterator of byte chunks) instead of a JSON value; ``api.py`` writes it as a
chunked response, so neither the whole list nor the whole backup is ever one
string in memory.

The export takes every matching row from the in-memory snapshot in ONE pass
on the event loop (a consistent point in time: rows are immutable values),
sorts them in a worker thread, and renders them in chunks of ``CHUNK`` rows,
yielding between chunks so held Pings and other requests keep being served.
The filters are the list's (``listing.FILTER_FIELDS``), with the same
meaning. CSV cells that a spreadsheet would run as a formula (a DeviceType or
User-Agent is whatever a device sent) are prefixed with ``'``.

The backup asks the store for a consistent copy (SQLite's online backup API,
serialised with writes) into a private temporary file next to the database,
streams it, and deletes it.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from sentry.model import Association

from .errors import Conflict
from .listing import FILTER_FIELDS, Query, collect, row_order
from .schema import Call, Field, Route
from .views import association_item

__all__ = ["CHUNK", "CSV_COLUMNS", "ROUTES", "Stream", "csv_cell", "render_csv", "render_json"]

log = structlog.get_logger("sentry.admin")
CHUNK = 1000
_READ = 1 << 20


@dataclass(frozen=True)
class Stream:
    """A streamed answer: ``chunks`` are written in order as they come."""

    media_type: str
    filename: str
    chunks: AsyncIterator[bytes]


def _override(name: str) -> Callable[[dict[str, Any]], Any]:
    return lambda item: (item["override"] or {}).get(name)


CSV_COLUMNS: tuple[tuple[str, Callable[[dict[str, Any]], Any]], ...] = (
    *((k, lambda item, k=k: item[k]) for k in ("device_id", "user", "device_type", "state")),
    ("reasons", lambda item: " ".join(item["reasons"])),
    ("violations", lambda item: " ".join(item["violations"])),
    *(
        (k, lambda item, k=k: item[k])
        for k in ("linked", "device", "unlinked", "pool", "backend_type", "protocol_version")
    ),
    ("override", _override("kind")),
    ("override_actor", _override("actor")),
    ("override_note", _override("note")),
    *((k, lambda item, k=k: item[k]) for k in ("user_agent", "first_seen", "last_seen")),
    ("access_rule", lambda item: item["access_rule"]),
)
"""The CSV columns, in order, from an association's JSON view."""


def csv_cell(value: Any) -> str:
    """A value as CSV text; formula-like text is defused with a leading ``'``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def render_csv(rows: Iterable[Association], header: bool) -> bytes:
    """CSV lines of ``rows`` (with the header line first when asked)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    if header:
        writer.writerow([name for name, _ in CSV_COLUMNS])
    for row in rows:
        item = association_item(row)
        writer.writerow([csv_cell(get(item)) for _, get in CSV_COLUMNS])
    return out.getvalue().encode("utf-8")


def render_json(rows: Iterable[Association], first: bool) -> bytes:
    """Items of a JSON array (the caller writes ``[`` and ``]``)."""
    items = [json.dumps(association_item(r), separators=(",", ":")) for r in rows]
    if not items:
        return b""
    return (("" if first else ",\n") + ",\n".join(items)).encode("utf-8")


async def _chunks(rows: list[Association], fmt: str) -> AsyncIterator[bytes]:
    if fmt == "json":
        yield b"[\n"
    for start in range(0, max(len(rows), 1), CHUNK):
        part = rows[start : start + CHUNK]
        if fmt == "csv":
            yield render_csv(part, header=start == 0)
        else:
            yield render_json(part, first=start == 0)
        await asyncio.sleep(0)  # let held Pings and other requests run
    if fmt == "json":
        yield b"\n]\n"


async def _export(call: Call) -> Stream:
    fmt = call.query.get("format", "json")
    rows = collect(call.ctx.snapshot, Query.of(call.query))  # one pass, on the loop
    rows = await asyncio.to_thread(sorted, rows, key=row_order)
    log.info("admin_export", actor=call.actor, format=fmt, rows=len(rows))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    media = "text/csv; charset=utf-8" if fmt == "csv" else "application/json"
    return Stream(media, f"associations-{stamp}.{fmt}", _chunks(rows, fmt))


async def _backup(call: Call) -> Stream:
    if call.ctx.settings.store.kind == "postgresql":
        raise Conflict(
            "the state is in PostgreSQL (store.kind: postgresql): back it up with the "
            "server's tools, e.g. pg_dump --format=custom (see README, PostgreSQL)"
        )
    store = getattr(call.ctx.store, "inner", call.ctx.store)  # past a wrapper (WatchedStore)
    backup = getattr(store, "backup", None)
    folder = getattr(store, "path", None)
    if backup is None or not isinstance(folder, Path):
        raise Conflict("this store keeps nothing on disk to back up (store.kind: memory)")
    tmp = folder.parent / f".backup-{secrets.token_hex(8)}.db"
    try:
        await backup(tmp)
    except BaseException:
        _remove(tmp)
        raise
    log.info("admin_backup", actor=call.actor, bytes=tmp.stat().st_size)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Stream("application/vnd.sqlite3", f"sentry-{stamp}.db", _file_chunks(tmp))


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    """The file's bytes, read off the event loop; the file is deleted afterwards."""
    try:
        with path.open("rb") as fh:
            while chunk := await asyncio.to_thread(fh.read, _READ):
                yield chunk
    finally:
        _remove(path)


def _remove(path: Path) -> None:
    for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
        if os.path.lexists(leftover):
            leftover.unlink()


_FORMAT = Field("string", "csv or json (default json: one array)", choices=("csv", "json"))

ROUTES = (
    Route(
        "GET",
        "/api/associations/export",
        _export,
        "Every association matching the list filters, streamed as CSV or JSON",
        "associations",
        query={**FILTER_FIELDS, "format": _FORMAT},
        produces=("text/csv", "application/json"),
        response="Association",  # the JSON answer is an array of these
        description="All rows at one point in time, in list order (user, DeviceId); no paging. "
        "CSV cells starting with = + - @ are prefixed with ' (spreadsheet formulas).",
    ),
    Route(
        "GET",
        "/api/store/backup",
        _backup,
        "A consistent copy of the SQLite database, taken while the gateway runs",
        "store",
        produces=("application/vnd.sqlite3",),
        conflict=True,
        description="SQLite's online backup API, serialised with writes. 409 for the memory "
        "store and for PostgreSQL (use pg_dump).",
    ),
)
