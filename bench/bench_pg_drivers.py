"""asyncpg vs psycopg 3 (async) for what the PostgreSQL store does.

Run: ``.venv/bin/python bench/bench_pg_drivers.py [--rows 100000,1000000]``
(needs a server: ``SENTRY_TEST_POSTGRES_DSN`` or ``postgresql://postgres@127.0.0.1:5432/postgres``;
both drivers must be installed: ``pip install asyncpg 'psycopg[binary]'``). It makes a
database of its own (dropped at the end) with the store's schema (``sentry.store._pg_schema``)
and rows in the store's row format, then measures with each driver:

- *load*: ``SELECT`` every association and build the ``Snapshot`` (the
  store's decoder), in a fresh process per run (wall time and peak RSS);
- *first sight*: one ``apply`` transaction as a first request writes it
  (upsert the row, append its history, the change-feed row + ``NOTIFY``):
  median and p99 over repeated transactions;
- *bulk 1,000*: one transaction of 1,000 row upserts + 1,000 history rows +
  the feed row (a bulk block);
- *touch batch*: 10,000 ``last_seen`` moves in one ``UPDATE .. FROM unnest``.

Both drivers run the same SQL. Prints a markdown table and writes
``bench/results/bench_pg_drivers.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from itertools import islice
from pathlib import Path
from random import Random
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_store import associations
from sentry.store._pg_schema import FEED_LOCK, migrate

DSN = os.environ.get("SENTRY_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
RESULTS = Path(__file__).resolve().parent / "results"
DRIVERS = ("asyncpg", "psycopg")
_COLS = (
    "device_id, principal, device_type, user_agent, protocol_version, device_info, first_seen, "
    "last_seen, device, unlinked, manual_link, override, verdict, reasons, violations, pool, "
    "backend_type, wipe, policy_fingerprint, ambiguous_policy, verified_at"
)
_TYPES = (
    "text[]", "text[]", "text[]", "text[]", "text[]", "text[]", "float8[]", "float8[]", "text[]",
    "text[]", "text[]", "text[]", "text[]", "text[]", "text[]", "text[]", "text[]", "text[]",
    "text[]", "bool[]", "float8[]",
)  # fmt: skip
_N = len(_TYPES)
_UPDATE = ", ".join(f"{c} = EXCLUDED.{c}" for c in _COLS.split(", ")[2:])


def _sql(style: str) -> dict[str, str]:
    """The statements, with asyncpg's ``$n`` or psycopg's ``%s`` placeholders."""

    def p(i: int) -> str:
        return f"${i}" if style == "asyncpg" else "%s"

    arrays = ", ".join(f"{p(i + 1)}::{t}" for i, t in enumerate(_TYPES))
    return {
        "upsert": f"INSERT INTO associations ({_COLS}) SELECT * FROM unnest({arrays}) "
        f"ON CONFLICT (device_id, principal) DO UPDATE SET {_UPDATE}",
        "history": "INSERT INTO history (device_id, principal, at, kind, detail) "
        f"SELECT * FROM unnest({p(1)}::text[], {p(2)}::text[], {p(3)}::float8[], "
        f"{p(4)}::text[], {p(5)}::text[])",
        "lock": f"SELECT pg_advisory_xact_lock({FEED_LOCK})",
        "feed": "WITH f AS (INSERT INTO change_feed (node, at, changes) "
        f"VALUES ({p(1)}, {p(2)}, {p(3)}) RETURNING seq) "
        f"SELECT seq, pg_notify('sentry_changes', seq::text || ' ' || {p(4)}) FROM f",
        "touch": "UPDATE associations a SET last_seen = t.s FROM unnest("
        f"{p(1)}::text[], {p(2)}::text[], {p(3)}::float8[]) AS t(d, u, s) "
        "WHERE a.device_id = t.d AND a.principal = t.u AND a.last_seen < t.s",
        "select": f"SELECT {_COLS} FROM associations",
    }


def _columns(rows: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
    return [[r[i] for r in rows] for i in range(_N)]


def _params(assoc: Any) -> tuple[Any, ...]:
    from sentry.store._sqlite_rows import association_params

    p = list(association_params(assoc))
    p[19] = bool(p[19])
    return tuple(p)


# --- one driver behind four operations ---


class Ops:
    """The benchmarked operations over one connection of one driver."""

    def __init__(self, driver: str, conn: Any) -> None:
        self.driver, self.conn, self.sql = driver, conn, _sql(driver)

    @classmethod
    async def connect(cls, driver: str, dsn: str) -> Ops:
        if driver == "asyncpg":
            import asyncpg

            return cls(driver, await asyncpg.connect(dsn))
        import psycopg

        return cls(driver, await psycopg.AsyncConnection.connect(dsn, prepare_threshold=0))

    async def close(self) -> None:
        await self.conn.close()

    async def transaction(self, statements: list[tuple[str, Sequence[Any]]]) -> None:
        """Run ``statements`` in one transaction (the store's ``apply``)."""
        if self.driver == "asyncpg":
            async with self.conn.transaction():
                for name, args in statements:
                    await self.conn.execute(self.sql[name], *args)
            return
        async with self.conn.transaction(), self.conn.cursor() as cur:
            for name, args in statements:
                await cur.execute(self.sql[name], args)

    async def load(self) -> int:
        from sentry.policy.snapshot import Snapshot
        from sentry.store._sqlite_rows import association_decoder

        decode = association_decoder()
        if self.driver == "asyncpg":
            async with self.conn.transaction():
                rows = []
                async for r in self.conn.cursor(self.sql["select"], prefetch=20_000):
                    rows.append(decode(r))
        else:
            rows = []
            binary = os.environ.get("PSYCOPG_BINARY") == "1"
            async with (
                self.conn.transaction(),
                self.conn.cursor(name="load", binary=binary) as cur,
            ):
                await cur.execute(self.sql["select"])
                while batch := await cur.fetchmany(20_000):
                    rows.extend(map(decode, batch))
        return len(Snapshot.build(associations=rows))


# --- set-up ---


async def _admin(query: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(DSN)
    try:
        await conn.execute(query)
    finally:
        await conn.close()


def _dsn_for(db: str) -> str:
    base, _, _ = DSN.rpartition("/")
    return f"{base}/{db}"


async def _fill(dsn: str, rows: int) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await migrate(conn)
        records = (_params(a) for a in islice(associations(Random(1)), rows))
        await conn.copy_records_to_table("associations", records=records, columns=_COLS.split(", "))
        await conn.execute("VACUUM ANALYZE associations")
    finally:
        await conn.close()


# --- measurements ---


def _first_sight(i: int) -> list[tuple[str, Sequence[Any]]]:
    from sentry.model import Association, AssociationKey

    row = Association(AssociationKey(f"NEW{i:08d}", f"new{i}@corp.example"), "iPhone")
    detail = '{"verdict":"forward"}'
    feed = '[["PutAssociation", "..."], ["AppendHistory", "..."]]'
    return [
        ("upsert", _columns([_params(row)])),
        ("history", ([row.key.device_id], [row.key.user], [1.0], ["first_seen"], [detail])),
        ("lock", ()),
        ("feed", ("bench", time.time(), feed, "bench")),
    ]


def _bulk(base: int, n: int = 1000) -> list[tuple[str, Sequence[Any]]]:
    from sentry.model import Association, AssociationKey, Verdict

    rows = [
        _params(Association(AssociationKey(f"{i:016X}", "bulk@corp.example"), "x", verdict=v))
        for i in range(base, base + n)
        for v in (Verdict.REFUSE,)
    ]
    keys = [(r[0], r[1]) for r in rows]
    history = (
        [k[0] for k in keys], [k[1] for k in keys], [1.0] * n, ["admin"] * n, ["{}"] * n,
    )  # fmt: skip
    feed = json.dumps([["PutAssociation", list(r)] for r in rows])
    return [
        ("upsert", _columns(rows)),
        ("history", history),
        ("lock", ()),
        ("feed", ("bench", time.time(), feed, "bench")),
    ]


def _touches(rows: int, n: int = 10_000) -> list[tuple[str, Sequence[Any]]]:
    keys = [(a.key.device_id, a.key.user) for a in islice(associations(Random(1)), min(rows, n))]
    now = time.time()
    return [("touch", ([k[0] for k in keys], [k[1] for k in keys], [now] * len(keys)))]


async def _timed(call: Callable[[], Awaitable[None]], repeat: int) -> dict[str, float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        await call()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {
        "median_ms": statistics.median(times),
        "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))],
    }


async def _writes(driver: str, dsn: str, rows: int, repeat: int) -> dict[str, Any]:
    ops = await Ops.connect(driver, dsn)
    counter = iter(range(10**9))
    try:
        first = await _timed(lambda: ops.transaction(_first_sight(next(counter))), repeat)
        bulk = await _timed(lambda: ops.transaction(_bulk(next(counter) * 1000)), 10)
        batch = _touches(rows)
        touch = await _timed(lambda: ops.transaction(batch), 10)
    finally:
        await ops.close()
    return {"first_sight": first, "bulk_1000": bulk, "touch_10000": touch}


def _peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(driver: str, dsn: str) -> None:
    """In a fresh process: one load, printed as JSON."""

    import sentry.policy.snapshot
    import sentry.store._sqlite_rows  # noqa: F401

    async def run() -> int:
        ops = await Ops.connect(driver, dsn)
        try:
            return await ops.load()
        finally:
            await ops.close()

    gc.disable()  # as the store does while it loads (sqlite._gc_paused)
    start = time.perf_counter()
    count = asyncio.run(run())
    print(json.dumps({"rows": count, "seconds": time.perf_counter() - start, "mib": _peak_mib()}))


def _load(driver: str, dsn: str, runs: int) -> dict[str, float]:
    out = []
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, __file__, "--child", driver, dsn], capture_output=True, text=True
        )
        if done.returncode != 0:
            raise SystemExit(f"the {driver} load failed:\n{done.stderr}")
        out.append(json.loads(done.stdout))
    return {"seconds": min(r["seconds"] for r in out), "peak_mib": max(r["mib"] for r in out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="100000,1000000", help="table sizes, comma-separated")
    parser.add_argument("--runs", type=int, default=3, help="load runs per driver (best taken)")
    parser.add_argument("--repeat", type=int, default=300, help="first-sight transactions")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    for rows in (int(x) for x in args.rows.split(",")):
        db = f"sentry_bench_{uuid.uuid4().hex[:8]}"
        asyncio.run(_admin(f"CREATE DATABASE {db}"))
        try:
            dsn = _dsn_for(db)
            asyncio.run(_fill(dsn, rows))
            for driver in DRIVERS:
                entry = {"load": _load(driver, dsn, args.runs)}
                entry |= asyncio.run(_writes(driver, dsn, rows, args.repeat))
                results[f"{driver} {rows}"] = entry
                print(driver, rows, json.dumps(entry), flush=True)
        finally:
            asyncio.run(_admin(f"DROP DATABASE {db} WITH (FORCE)"))
    _report(results)


def _report(results: dict[str, Any]) -> None:
    print("\n| driver, rows | load s | load peak MiB | first sight median / p99 ms "
          "| bulk 1,000 median ms | touch 10,000 median ms |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        f = r["first_sight"]
        print(
            f"| {name} | {r['load']['seconds']:.2f} | {r['load']['peak_mib']:.0f} "
            f"| {f['median_ms']:.2f} / {f['p99_ms']:.2f} | {r['bulk_1000']['median_ms']:.1f} "
            f"| {r['touch_10000']['median_ms']:.1f} |"
        )
    RESULTS.mkdir(exist_ok=True)
    doc = {"results": results, "python": sys.version.split()[0]}
    (RESULTS / "bench_pg_drivers.json").write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
    else:
        main()
