"""A flush of batched last-seen times beside a busy event loop: one statement
against one ``executemany`` step per row.

Run: ``.venv/bin/python bench/bench_touchflush.py [rows] [rounds]``. One
process, a real ``SqliteStore`` in a temporary folder with ``rows``
associations. The event loop is kept busy as a saturated gateway's is (64
tasks, each 0.6 ms of CPU a turn) while ``store.apply`` writes one Touch per
row, as ``sentry.lastseen`` does every ``store.touch_flush_seconds``; the
store runs the write in its thread. Reported per way of writing: how long
the flush took, how long a write issued 10 ms into it waited (a first
sight's: the store has one thread, so it waits for the flush), and the
share of the flush's time the event loop's thread was on a CPU (the rest it
waited for the GIL the store's thread had taken); then a put of every row
(``PutAssociation``), as a bulk admin action writes its rows.

Side by side in one run, alternating: ``executemany`` (one step per row,
the sqlite3 module giving up the GIL around each: the baseline, what the
store did before) and the single ``UPDATE .. FROM json_each(?)`` statement
it uses on SQLite 3.38 or later (``sentry.store._sqlite_writes``). Prints a
markdown table.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_commits import BUSY_SECONDS, BUSY_TASKS, busy
from bench.bench_store import associations
from sentry.model import AssociationKey
from sentry.policy import PutAssociation, Touch
from sentry.store import _sqlite_writes
from sentry.store.sqlite import SqliteStore


async def measure(rows: int, rounds: int) -> dict[str, list[dict[str, float]]]:
    results: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = await SqliteStore.open(Path(tmp) / "touch.db")
        made = [a for _, a in zip(range(rows), associations(random.Random(1)), strict=False)]
        await store.apply([PutAssociation(a) for a in made])
        keys: list[AssociationKey] = [a.key for a in made]
        stop = asyncio.Event()
        tasks = [asyncio.ensure_future(busy(stop)) for _ in range(BUSY_TASKS)]
        await asyncio.sleep(0.5)
        clock = 2e9
        for _ in range(rounds):
            for name, json_run in (("executemany, a step per row", False), ("one statement", True)):
                _sqlite_writes.JSON_RUNS = json_run
                clock += 10
                touches = [Touch(k, clock) for k in keys]
                c0, t0 = time.thread_time(), time.perf_counter()
                flush = asyncio.ensure_future(store.apply(touches))
                await asyncio.sleep(0.01)  # the flush under way in the store's thread
                w0 = time.perf_counter()
                first = replace(made[0], key=AssociationKey(f"NEW{clock:.0f}", "new@corp.example"))
                await store.apply([PutAssociation(first)])  # a first sight's write
                waited = time.perf_counter() - w0
                await flush
                took = time.perf_counter() - t0
                share = (time.thread_time() - c0) / took  # the loop thread's CPU meanwhile
                p0 = time.perf_counter()
                await store.apply([PutAssociation(a) for a in made])  # a bulk action's rows
                put = time.perf_counter() - p0
                row = {"flush": took, "loop": share, "write": waited, "put": put}
                results.setdefault(name, []).append(row)
        stop.set()
        await asyncio.gather(*tasks)
        loaded = await store.load()
        assert all(loaded.get(k).last_seen == made[i].last_seen for i, k in enumerate(keys))
        await store.close()
    _sqlite_writes.JSON_RUNS = True
    return results


def main(rows: int = 1100, rounds: int = 3) -> None:
    results = asyncio.run(measure(rows, rounds))
    print(
        f"a flush of {rows:,} last-seen times, SQLite, beside a loop kept busy by "
        f"{BUSY_TASKS} tasks of {BUSY_SECONDS * 1e3:.1f} ms a turn; median of {rounds} rounds\n"
    )
    print(
        "| write | flush, ms | a write issued 10 ms into it, ms "
        "| the event loop's thread on a CPU meanwhile | a put of every row, ms |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    med = {}
    for name, runs in results.items():
        flush = statistics.median(r["flush"] for r in runs)
        loop = statistics.median(r["loop"] for r in runs)
        write = statistics.median(r["write"] for r in runs)
        med[name] = flush
        put = statistics.median(r["put"] for r in runs)
        print(
            f"| {name} | {flush * 1e3:,.1f} | {write * 1e3:,.1f} | {loop:.0%} | {put * 1e3:,.1f} |"
        )
    base, new = med["executemany, a step per row"], med["one statement"]
    print(f"\none statement / executemany: the flush {new / base:.3f}x")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
