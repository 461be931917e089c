"""Concurrent first sights on a saturated event loop: the commit queue against
one writer lock per commit.

Run: ``.venv/bin/python bench/bench_commits.py [first-sights] [rounds]``. One
process, one event loop, a real SQLite store in a temporary folder (its writes
in the store's executor thread, as in the gateway). The loop is kept as busy
as a gateway's at 64 connections: 64 tasks each spend 0.6 ms of CPU per turn
(a request's share of a turn), so one turn takes about 40 ms. Then N new
devices make their first request at once (``AccessState.decide``: each a
durable write, built again under the lock), and the bench reports how long
they took and how many turns of the loop passed, per first sight.

Side by side in one run, alternating:

- *one lock per commit* (the baseline): the commit path before the queue,
  reproduced here: each caller takes the writer lock, builds, and runs its
  write in a task of its own (``sentry.aio.uncancellable``), so each commit
  waits for the lock to be handed on, for its task to start and for its
  result to come back, a turn each;
- *the queue* (``AccessState.commit``): one runner takes the waiting commits
  in order, each built on the state the last left, under the lock it takes
  once.

A lone first sight on the same busy loop is timed too (the queue must not
make the uncontended case slower). Prints a markdown table.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from sentry.access import AccessState, Build, Committed
from sentry.aio import uncancellable
from sentry.model import AssociationKey, Pool, Realm, Realms, Routing, User
from sentry.observability import Metrics
from sentry.policy import Change, RequestFacts, Snapshot
from sentry.policy.planner import NOTHING
from sentry.store.sqlite import SqliteStore
from sentry.testing.conversation import req

BUSY_TASKS, BUSY_SECONDS = 64, 0.6e-3
REALMS = Realms((Realm("corp.example"),), default="corp.example")


def _one_lock_per_commit(state: AccessState) -> Any:
    """``commit`` as it was before the queue (no ``in_thread``, no catch-up:
    a single node's store)."""

    async def commit(build: Build, *, kept: AssociationKey | None = None, **_: Any) -> Committed:
        async with state.writer:
            changes: Sequence[Change] = build(state.snapshot, state.clock())
            if not changes:
                return Committed((), NOTHING, 0)
            write = state._write(tuple(changes), kept, build)
            return await uncancellable(write, name="bench:commit")

    return commit


async def busy(stop: asyncio.Event) -> None:
    """One of the BUSY_TASKS keeping the loop as busy as a saturated gateway's:
    BUSY_SECONDS of CPU a turn (``bench_touchflush`` uses them too)."""
    while not stop.is_set():
        until = time.perf_counter() + BUSY_SECONDS
        while time.perf_counter() < until:
            pass
        await asyncio.sleep(0)


async def _round(state: AccessState, n: int, tag: str, turns: list[int]) -> dict[str, float]:
    latencies: list[float] = []

    async def first_sight(i: int) -> None:
        request = req(f"user{i}@corp.example", f"{tag}{i:05d}", realms=REALMS)
        started = time.perf_counter()
        outcome = await state.decide(request, RequestFacts())
        latencies.append(time.perf_counter() - started)
        assert outcome.association.key in state.snapshot  # written and applied

    started, turn0 = time.perf_counter(), turns[0]
    await asyncio.gather(*(first_sight(i) for i in range(n)))
    return {
        "seconds": time.perf_counter() - started,
        "turns": turns[0] - turn0,
        "p50": statistics.median(latencies),
        "max": max(latencies),
    }


async def measure(n: int, rounds: int) -> dict[str, list[dict[str, float]]]:
    users = [User(f"user{i}@corp.example", f"user{i}@corp.example") for i in range(n)]
    snapshot = Snapshot.build(
        users=users,
        pools=[Pool("exchange", "exchange")],
        routing=Routing(domains={"corp.example": "exchange"}),
        associations=[],
        realms=REALMS,
    )
    results: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = await SqliteStore.open(Path(tmp) / "commits.db")
        state = AccessState(store, snapshot, Metrics(CollectorRegistry()))
        queued = state.commit
        stop, turns = asyncio.Event(), [0]

        async def ticker() -> None:
            while not stop.is_set():
                turns[0] += 1
                await asyncio.sleep(0)

        tasks = [asyncio.ensure_future(busy(stop)) for _ in range(BUSY_TASKS)]
        tasks.append(asyncio.ensure_future(ticker()))
        await asyncio.sleep(0.5)  # the busy tasks settle into their turns
        paths = {"one lock per commit": _one_lock_per_commit(state), "the queue": queued}
        for r in range(rounds):
            for name, commit in paths.items():
                state.commit = commit  # type: ignore[method-assign]
                tag = f"R{r}{'Q' if commit is queued else 'L'}"
                results.setdefault(name, []).append(await _round(state, n, tag, turns))
                lone = await _round(state, 1, tag + "ONE", turns)
                results.setdefault(name + ", alone", []).append(lone)
        stop.set()
        await asyncio.gather(*tasks)
        await store.close()
    return results


def main(n: int = 20, rounds: int = 3) -> None:
    results = asyncio.run(measure(n, rounds))
    print(
        f"{n} first sights at once on a loop kept busy by {BUSY_TASKS} tasks of "
        f"{BUSY_SECONDS * 1e3:.1f} ms a turn, SQLite; median of {rounds} rounds\n"
    )
    print("| path | first sights | all done, ms | turns per first sight | p50, ms | max, ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    med: dict[str, dict[str, float]] = {}
    for name, runs in results.items():
        count = 1 if name.endswith("alone") else n
        m = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        med[name] = m
        print(
            f"| {name} | {count} | {m['seconds'] * 1e3:,.0f} | {m['turns'] / count:.2f} | "
            f"{m['p50'] * 1e3:,.0f} | {m['max'] * 1e3:,.0f} |"
        )
    base, new = med["one lock per commit"], med["the queue"]
    alone = med["the queue, alone"]["seconds"] / med["one lock per commit, alone"]["seconds"]
    print(
        f"\nthe queue / one lock per commit: all done {new['seconds'] / base['seconds']:.2f}x, "
        f"turns {new['turns'] / base['turns']:.2f}x, p50 {new['p50'] / base['p50']:.2f}x; "
        f"alone {alone:.2f}x"
    )


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
