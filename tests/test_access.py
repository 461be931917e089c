"""AccessState: its last-seen batching (written on a timer in production, only
when asked in the test harness, so a test that counts store writes counts its
own) and its commit queue (one runner takes the commits in order, each built
on the state the ones before it left)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import pytest
import structlog
from prometheus_client import CollectorRegistry

from sentry.access import AccessState, Build, Committed
from sentry.model import AssociationKey, Pool, Routing
from sentry.observability import Metrics
from sentry.policy import Change, PutAssociation, Snapshot, Touch, preapprove
from sentry.store.memory import MemoryStore
from sentry.testing.eas_client import EasTestClient
from sentry.testing.gateway import DemoGateway, demo_gateway

FOLDERSYNC = '<FolderSync xmlns="FolderHierarchy"><SyncKey>0</SyncKey></FolderSync>'


def record_touch_writes(gw: DemoGateway) -> list[int]:
    """Wrap the store: the sizes of the Touch-only batches it is given."""
    store = gw.gateway.store
    sizes: list[int] = []
    original = store.apply

    async def apply(changes: Sequence[Change]) -> None:
        if changes and all(isinstance(c, Touch) for c in changes):
            sizes.append(len(changes))
        await original(changes)

    store.apply = apply  # type: ignore[method-assign]
    return sizes


async def seen_twice(gw: DemoGateway, session: aiohttp.ClientSession, device: str) -> None:
    """Provision (first sight, a durable write), then a request that only touches."""
    url = f"{gw.url}/Microsoft-Server-ActiveSync"
    client = EasTestClient(session, url, "alice", "secret", device_id=device)
    await client.provision()
    assert (await client.post("FolderSync", FOLDERSYNC)).status == 200


async def test_the_harness_writes_last_seen_only_when_asked(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    async with demo_gateway(tmp_path) as gw:
        writes = record_touch_writes(gw)
        await seen_twice(gw, session, "TOUCH0001")
        assert writes == []  # no flush runs on a timer in the harness
        assert await gw.gateway.state.flush_touches() == 1
        assert writes == [1]
        assert await gw.gateway.state.flush_touches() == 0  # nothing pending any more


async def test_a_flush_interval_writes_last_seen_on_its_own(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    async with demo_gateway(tmp_path, touch_flush_seconds=0.01) as gw:
        writes = record_touch_writes(gw)
        await seen_twice(gw, session, "TOUCH0002")
        async with asyncio.timeout(10):  # a hang guard: the flush runs every 10 ms
            while not writes:
                await asyncio.sleep(0.01)
        assert sum(writes) >= 1


async def test_a_large_commit_logs_where_its_time_went(tmp_path: Path) -> None:
    from structlog.testing import capture_logs

    from sentry.access import LARGE_COMMIT
    from sentry.model import AssociationKey
    from sentry.policy import preapprove

    async with demo_gateway(tmp_path) as gw:
        state = gw.gateway.state

        def build(prefix: str, rows: int):  # type: ignore[no-untyped-def]
            keys = [AssociationKey(f"{prefix}{i:04d}", "alice") for i in range(rows)]
            return lambda snap, now: [
                c for k in keys for c in preapprove(snap, k, note="n", actor="t", now=now)
            ]

        with capture_logs() as logs:
            committed = await state.commit(build("BULKLOG", LARGE_COMMIT))
            await state.commit(build("SMALLLOG", 1))  # a small one: no line
    (line,) = [e for e in logs if e["event"] == "large_commit"]
    assert line["changes"] == len(committed.changes) >= LARGE_COMMIT
    assert committed.write_seconds > 0 and committed.absorb_seconds > 0
    for phase in ("build_ms", "write_ms", "absorb_ms"):
        assert 0 <= line[phase] <= line["total_ms"]


# -- the commit queue: one runner, in order, each on the state the last left ---
# On a shared store (``take_missed`` set by sentry.cluster) each commit takes the
# lock and runs in a task of its own instead; the tests below hold for both.


class GatedStore(MemoryStore):
    """A memory store whose writes can be held at a gate, like SQLite's in
    its executor thread: a write that has begun goes on to its end."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()
        self.writes: list[tuple[AssociationKey, ...]] = []

    async def apply(self, changes: Sequence[Change]) -> None:
        async def write() -> None:
            self.entered.set()
            await self.gate.wait()
            self.apply_now(changes)
            keys = (c.association.key for c in changes if isinstance(c, PutAssociation))
            self.writes.append(tuple(keys))

        await asyncio.shield(asyncio.ensure_future(write()))  # not stopped by a cancel


def queue_state(shared: bool = False) -> tuple[AccessState, GatedStore]:
    store = GatedStore()
    pools = [Pool("exchange", "exchange")]
    snapshot = Snapshot.build(pools=pools, routing=Routing(default="exchange"))
    state = AccessState(store, snapshot, Metrics(CollectorRegistry()))
    if shared:
        state.take_missed = lambda exc: None  # as sentry.cluster sets it; never called here
    return state, store


both_paths = pytest.mark.parametrize("shared", [False, True], ids=["queue", "shared-store"])


def row_of(device: str, seen: list[frozenset[str]] | None = None) -> Build:
    """A build adding (device, alice); ``seen``: the devices it found there."""

    def build(snapshot: Snapshot, now: float) -> Sequence[Change]:
        if seen is not None:
            seen.append(frozenset(r.key.device_id for r in snapshot.associations()))
        key = AssociationKey(device, "alice")
        return preapprove(snapshot, key, note="queued", actor="test", now=now)

    return build


async def hold_first_write(state: AccessState, store: GatedStore) -> asyncio.Future[Committed]:
    """A commit whose write is held at the gate (the runner busy with it)."""
    store.gate.clear()
    first = asyncio.ensure_future(state.commit(row_of("QFIRST")))
    await asyncio.wait_for(store.entered.wait(), 10)  # the first write began
    return first


@both_paths
async def test_queued_commits_run_in_order_each_built_on_the_last_ones_state(shared: bool) -> None:
    state, store = queue_state(shared)
    first = await hold_first_write(state, store)
    seen: list[frozenset[str]] = []
    called: list[int] = []

    async def queued_commit(i: int) -> Committed:
        called.append(i)  # commit queues (or waits for the lock) before it first yields
        return await state.commit(row_of(f"Q{i}", seen))

    queued = [asyncio.ensure_future(queued_commit(i)) for i in range(3)]
    while len(called) < 3:
        await asyncio.sleep(0)
    assert seen == []  # all three called commit; none built while the first write is held
    store.gate.set()
    await asyncio.gather(first, *queued)
    assert seen == [
        frozenset({"QFIRST"}),
        frozenset({"QFIRST", "Q0"}),
        frozenset({"QFIRST", "Q0", "Q1"}),
    ]
    firsts = [w[0].device_id for w in store.writes if w]
    assert firsts == ["QFIRST", "Q0", "Q1", "Q2"]


@both_paths
async def test_a_caller_cancelled_while_queued_is_dropped_and_the_rest_go_on(shared: bool) -> None:
    state, store = queue_state(shared)
    first = await hold_first_write(state, store)
    built: list[frozenset[str]] = []
    dropped = asyncio.ensure_future(state.commit(row_of("QDROPPED", built)))
    after = asyncio.ensure_future(state.commit(row_of("QAFTER")))
    await asyncio.sleep(0)
    dropped.cancel()
    store.gate.set()
    await asyncio.gather(first, after)
    assert dropped.cancelled() and built == []
    assert state.snapshot.get(AssociationKey("QDROPPED", "alice")) is None
    assert store.load_now().get(AssociationKey("QAFTER", "alice")) is not None


@both_paths
async def test_a_caller_cancelled_mid_write_waits_until_store_and_memory_agree(
    shared: bool,
) -> None:
    state, store = queue_state(shared)
    first = await hold_first_write(state, store)
    first.cancel()
    gate_when_done: list[bool] = []
    first.add_done_callback(lambda _: gate_when_done.append(store.gate.is_set()))
    await asyncio.sleep(0)  # the cancellation reaches the caller
    store.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert gate_when_done == [True]  # it ended only once its write could go on
    key = AssociationKey("QFIRST", "alice")
    assert state.snapshot.get(key) is not None
    assert store.load_now().get(key) is not None
    assert (await state.commit(row_of("QNEXT"))).changes  # the runner serves on


@both_paths
async def test_a_refused_build_fails_only_its_own_caller(shared: bool) -> None:
    state, store = queue_state(shared)
    first = await hold_first_write(state, store)

    def refuse(snapshot: Snapshot, now: float) -> Sequence[Change]:
        raise ValueError("refused by the build")

    refused = asyncio.ensure_future(state.commit(refuse))
    again = asyncio.ensure_future(state.commit(row_of("QFIRST")))  # a duplicate: refused too
    after = asyncio.ensure_future(state.commit(row_of("QAFTER")))
    store.gate.set()
    results = await asyncio.gather(first, refused, again, after, return_exceptions=True)
    assert isinstance(results[0], Committed) and isinstance(results[3], Committed)
    assert isinstance(results[1], ValueError) and str(results[1]) == "refused by the build"
    assert isinstance(results[2], Exception) and not isinstance(results[2], Committed)
    assert {k.device_id for k in (r.key for r in state.snapshot.associations())} == {
        "QFIRST",
        "QAFTER",
    }


@both_paths
async def test_a_step_waiting_for_the_writer_lock_comes_between_two_commits(
    shared: bool,
) -> None:
    """A store recovery waits for ``writer`` while one commit writes and
    another is queued: it gets the lock before the queued one (the runner
    takes the lock per commit, not for the whole queue). On a shared store
    the lock's own order holds: the commit that waited first goes first."""
    state, store = queue_state(shared)
    store.gate.clear()
    first = asyncio.ensure_future(state.commit(row_of("QFIRST")))
    second = asyncio.ensure_future(state.commit(row_of("QSECOND")))
    await asyncio.wait_for(store.entered.wait(), 10)
    seen: list[int] = []

    async def recovery() -> None:
        async with state.writer:
            seen.append(len(list(state.snapshot.associations())))

    stepped = asyncio.ensure_future(recovery())
    await asyncio.sleep(0)
    store.gate.set()
    await asyncio.gather(first, second, stepped)
    assert seen == ([2] if shared else [1])
    assert len(list(state.snapshot.associations())) == 2


@both_paths
async def test_a_queued_commit_logs_with_its_callers_request_fields(shared: bool) -> None:
    from structlog.testing import capture_logs

    from sentry.observability import context as logcontext

    state, store = queue_state(shared)
    first = await hold_first_write(state, store)

    def logged(device: str) -> Build:
        def build(snapshot: Snapshot, now: float) -> Sequence[Change]:
            structlog.get_logger("test").info("building")
            return row_of(device)(snapshot, now)

        return build

    async def request(request_id: str, device: str) -> None:
        token = logcontext.begin(request_id=request_id)
        try:
            await state.commit(logged(device))
        finally:
            logcontext.end(token)

    with capture_logs(processors=[logcontext.merge]) as logs:
        both = asyncio.gather(request("R-ONE", "QONE"), request("R-TWO", "QTWO"))
        await asyncio.sleep(0)
        store.gate.set()
        await asyncio.gather(first, both)
    assert [e.get("request_id") for e in logs if e["event"] == "building"] == ["R-ONE", "R-TWO"]


async def test_queued_commits_take_no_turn_of_the_loop_between_them() -> None:
    """On a saturated loop every turn costs tens of milliseconds: the queue
    must not hand over from commit to commit through the loop (the writer
    lock passed from waiter to waiter and a task per write cost about seven
    turns a commit). The memory store's writes never suspend, so ten queued
    commits are done within a few turns (gather's, the runner's start, the
    answers'), however many they are: 42 turns before the queue."""
    state, _store = queue_state()
    state.store = MemoryStore()  # writes that never suspend
    turns = 0
    done = False

    async def ticker() -> None:
        nonlocal turns
        while not done:
            turns += 1
            await asyncio.sleep(0)

    ticking = asyncio.ensure_future(ticker())
    await asyncio.sleep(0)
    started = turns
    await asyncio.gather(*(state.commit(row_of(f"QTURN{i}")) for i in range(10)))
    spent = turns - started
    done = True
    await ticking
    assert len(list(state.snapshot.associations())) == 10
    assert spent <= 8, spent
