"""Admin queries on PostgreSQL over 100,000 associations: filtered pages, deep pages,
one row, a history, audit pages. The SQLite store answers the same queries on the same
rows for comparison.

Run: ``.venv/bin/python bench/bench_pg_list.py [--rows 100000]`` (server:
``SENTRY_TEST_POSTGRES_DSN`` or ``postgresql://postgres@127.0.0.1:5432/postgres``). It
makes a database of its own (dropped at the end) and an SQLite file under
``bench/results/``, fills both through the stores' own ``apply`` (the rows of
``bench_store``, 2% blocked by an admin with an audit entry each, 0.1% wipe pending,
1% unverified, 0.5% never seen), then times each query (median of ``--repeat`` runs, in
ms, count included: every page answers its total). Prints a markdown table and writes
``bench/results/bench_pg_list.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from itertools import islice
from pathlib import Path
from random import Random
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_store import associations
from sentry.model import (
    AssociationKey,
    AuditEntry,
    HistoryEvent,
    Override,
    OverrideKind,
    Reason,
    Verdict,
    WipeStatus,
)
from sentry.policy import changes as ch
from sentry.store.base import AssociationFilter, AssociationState, AuditFilter
from sentry.store.postgres import PostgresStore
from sentry.store.sqlite import SqliteStore
from sentry.testing.postgres import Databases

DSN = os.environ.get("SENTRY_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
RESULTS = Path(__file__).resolve().parent / "results"
CHUNK = 5_000


def _changes(rows: int) -> list[list[ch.Change]]:
    """The rows as change lists of ``CHUNK`` (with their audit and history)."""
    rng = Random(7)
    out: list[list[ch.Change]] = []
    batch: list[ch.Change] = []
    for i, row in enumerate(islice(associations(Random(1)), rows)):
        roll = rng.random()
        if roll < 0.02:
            override = Override(OverrideKind.BLOCK, "lost", f"admin{i % 7}@corp.example", 1.0)
            row = replace(row, override=override, verdict=Verdict.REFUSE,
                          reasons=frozenset({Reason.MANUAL}))  # fmt: skip
            entry = AuditEntry(float(i), override.actor, "block", f"association:{row.key}", "")
            batch.append(ch.AppendAudit(entry))
        elif roll < 0.021:
            row = replace(row, wipe=WipeStatus.PENDING)
        elif roll < 0.031:
            row = replace(row, verified_at=None)
        elif roll < 0.036:
            row = replace(row, last_seen=0.0)
        batch.append(ch.PutAssociation(row))
        batch.append(ch.AppendHistory(row.key, HistoryEvent(row.first_seen, "first_seen", {})))
        if len(batch) >= CHUNK:
            out.append(batch)
            batch = []
    if batch:
        out.append(batch)
    return out


BLOCKED = AssociationState.BLOCKED
KEY = AssociationKey("000000000000002A", "user42@corp.example")
QUERIES: dict[str, Callable[[Any], Awaitable[Any]]] = {
    "page 1, no filter": lambda s: s.list_associations(None, 0, 100),
    "page at offset 50,000": lambda s: s.list_associations(None, 50_000, 100),
    "user": lambda s: s.list_associations(AssociationFilter(user="user42@corp.example")),
    "device_id": lambda s: s.list_associations(AssociationFilter(device_id="000000000000002A")),
    "state blocked": lambda s: s.list_associations(AssociationFilter(state=BLOCKED)),
    "state wipe_pending": lambda s: s.list_associations(
        AssociationFilter(state=AssociationState.WIPE_PENDING)
    ),
    "reason MANUAL": lambda s: s.list_associations(AssociationFilter(reason=Reason.MANUAL)),
    "device_type iPad, page 10": lambda s: s.list_associations(
        AssociationFilter(device_type="iPad"), 1_000, 100
    ),
    "unverified": lambda s: s.list_associations(AssociationFilter(verified=False)),
    "never seen": lambda s: s.list_associations(AssociationFilter(never_seen=True)),
    "linked + pool": lambda s: s.list_associations(AssociationFilter(linked=True, pool="exchange")),
    "one row": lambda s: s.get_association(KEY),
    "history": lambda s: s.history(KEY),
    "audit page 1": lambda s: s.audit(0, 100),
    "audit by actor": lambda s: s.audit(0, 100, AuditFilter(actor="admin3@corp.example")),
    "audit by target part": lambda s: s.audit(0, 100, AuditFilter(target="00000000000A")),
}  # fmt: skip


async def _time(store: Any, repeat: int) -> dict[str, dict[str, float]]:
    out = {}
    for name, query in QUERIES.items():
        await query(store)  # warm
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            answer = await query(store)
            times.append((time.perf_counter() - start) * 1000)
        total = answer[1] if isinstance(answer, tuple) else None
        out[name] = {"median_ms": statistics.median(times), "max_ms": max(times), "total": total}
    return out


async def _run(rows: int, repeat: int) -> dict[str, Any]:
    lists = _changes(rows)
    databases = Databases(DSN)
    dsn = await databases.create()
    sqlite_path = RESULTS / f"bench_pg_list_{uuid.uuid4().hex[:6]}.db"
    try:
        pg = await PostgresStore.open(dsn, prune=False)
        sq = await SqliteStore.open(sqlite_path)
        for changes in lists:
            await pg.apply(changes)
            await sq.apply(changes)
        conn = await __import__("asyncpg").connect(dsn)
        await conn.execute("VACUUM ANALYZE")
        await conn.close()
        results = {"postgresql": await _time(pg, repeat), "sqlite": await _time(sq, repeat)}
        await pg.close()
        await sq.close()
    finally:
        await databases.drop_all()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{sqlite_path}{suffix}").unlink(missing_ok=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="associations")
    parser.add_argument("--repeat", type=int, default=20, help="runs per query (median)")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    results = asyncio.run(_run(args.rows, args.repeat))
    print(f"\n{args.rows:,} associations; median (max) ms over {args.repeat} runs\n")
    print("| query | matching rows | PostgreSQL | SQLite |")
    print("| --- | ---: | ---: | ---: |")
    for name in QUERIES:
        pg, sq = results["postgresql"][name], results["sqlite"][name]
        total = "" if pg["total"] is None else f"{pg['total']:,}"
        print(
            f"| {name} | {total} | {pg['median_ms']:.1f} ({pg['max_ms']:.1f}) "
            f"| {sq['median_ms']:.1f} ({sq['max_ms']:.1f}) |"
        )
    doc = {"rows": args.rows, "repeat": args.repeat, "results": results}
    (RESULTS / "bench_pg_list.json").write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
