"""``PostgresStore``: the shared store for several gateway nodes (asyncpg).

Approach.

- Driver: asyncpg (measured against psycopg 3 in ``bench/bench_pg_drivers.py``:
  faster on the bulk load that dominates start-up and on every write measured;
  see the README). One pool of ``pool_size`` connections; the pool replaces a
  connection the server dropped at its next use, so a terminated backend or a
  restarted server costs one failed call at most.
- Failures: errors that say something about the store (``_pg_faults``: server
  down or cut off, connection terminated, read-only standby, disk full...)
  become ``StoreUnavailable`` with a ``StoreFault``, which ``WatchedStore``
  turns into degraded mode; other errors propagate. Reads, and writes whose
  ``COMMIT`` was never sent, are retried on a fresh connection with backoff
  (``RETRY_DELAYS``; never after a timeout, and never past ``connect_timeout``
  in all, so a request waits at most about that long for a dead server). A
  connection lost *during* ``COMMIT`` leaves the outcome
  unknown: the store waits for the old backend to end and looks for the
  transaction's change-feed row, so it reports exactly what happened.
- ``apply``: ``FEED_LOCK`` first (writers are serialised, and rows commit
  in ``seq`` order), the whole change list in one transaction
  (``_pg_writes``), then, in the same transaction, one change-feed row and
  ``pg_notify(channel, "<seq> <node>")``, which PostgreSQL delivers at
  commit. ``apply_seq`` returns the row's ``seq``.
- The guard (scale-out, ``sentry.cluster``): once ``view`` is set (the feed
  ``seq`` the node's snapshot holds), a write of anything but last-seen
  times first checks under the lock that the feed's head is ``view``; if
  another node wrote meanwhile, the writer's ``REBUILD`` hook (set by
  ``AccessState``) takes the missed rows and returns the change list
  decided again, which is written instead in the same transaction; without
  a hook (or when the rows were pruned) nothing is written and
  ``FeedBehind`` carries them. A decision is thus always made on the latest
  state: limits and the one-backend-type rule hold across nodes (no
  read-then-write race).
- ``load_with_seq``: every table read in one repeatable-read transaction, with
  the feed's head at that instant: the snapshot is exactly the feed up to it.
- The feed: ``changes_since``, ``head``, ``prune_feed`` (rows older than
  ``feed_retention`` seconds, every ``prune_interval`` by a task of the store)
  and ``listen()`` (``_pg_listen.FeedListener``: a dedicated connection that
  reconnects). ``FeedGap`` when asked for rows already pruned.
- Schema: numbered migrations (``_pg_schema``) at open; a newer schema is
  refused. The DSN is shown redacted everywhere (``sentry.dsn``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg

from sentry.aio import cancel_wait, create_task
from sentry.dsn import redact_dsn
from sentry.model import Association, AssociationKey, AuditEntry, HistoryEvent
from sentry.policy.changes import Change, Touch
from sentry.policy.snapshot import Snapshot

from . import _pg_read as read
from ._pg_faults import classify, problem_of, retryable
from ._pg_listen import FeedListener
from ._pg_schema import FEED_LOCK, migrate
from ._pg_writes import check_changes, write_changes
from .base import (
    AssociationFilter,
    AuditFilter,
    SchemaError,
    StoreError,
    StoreFault,
    StoreOpenError,
    StoreProblem,
    StoreUnavailable,
)
from .feed import REBUILD, FeedBehind, FeedEntry, encode_changes

__all__ = ["CHANNEL", "RETRY_DELAYS", "FeedGap", "PostgresOptions", "PostgresStore", "default_node"]

T = TypeVar("T")
CHANNEL = "sentry_changes"
RETRY_DELAYS = (0.05, 0.25, 1.0)
"""Pauses before the retries of a call that lost its connection."""

_KEY = "store.dsn"
_FEED_INSERT = (
    "WITH f AS (INSERT INTO change_feed (node, at, changes) "
    "VALUES ($1, extract(epoch FROM clock_timestamp()), $2) RETURNING seq) "
    "SELECT seq, pg_notify($3, seq::text || ' ' || $1) FROM f"
)
_PROBE = (
    "INSERT INTO store_probe (node, at) VALUES ($1, extract(epoch FROM clock_timestamp())) "
    "ON CONFLICT (node) DO UPDATE SET at = EXCLUDED.at"
)


class FeedGap(StoreError):
    """The feed rows after the asked sequence number were pruned: reload."""


@dataclass(frozen=True, slots=True)
class PostgresOptions:
    """How the store uses its server (``store.*`` settings)."""

    pool_size: int = 5
    connect_timeout: float = 5.0
    command_timeout: float = 30.0
    feed_retention: float = 3600.0
    prune_interval: float = 60.0
    channel: str = CHANNEL


def default_node() -> str:
    """A name for this process in the feed: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class _Write:
    """Where one write attempt got to (for a connection lost mid-way)."""

    seq: int | None = None
    pid: int | None = None
    committing = False
    guarded = False


class PostgresStore:
    """A ``Store`` on a PostgreSQL server; open it with ``await PostgresStore.open(dsn)``."""

    def __init__(
        self, pool: Any, dsn: str, password: str | None, node: str, options: PostgresOptions
    ) -> None:
        self._pool: Any = pool
        self._dsn, self._password = dsn, password
        self.where = redact_dsn(dsn)
        self.node = node
        self.options = options
        self._closed = False
        self._pruner: asyncio.Task[None] | None = None
        self.view: int | None = None
        """The feed ``seq`` this node's snapshot holds (None: writes are not
        guarded). Set by ``sentry.cluster``; a guarded write raises
        ``FeedBehind`` unless the feed's head is exactly ``view``."""
        self.loaded: int | None = None
        """The feed head the last ``load`` held (where a follower starts)."""
        self.uncertain: set[int] = set()
        """Feed ``seq``s of this node's writes whose COMMIT outcome stayed
        unknown (the caller was told nothing was written): if the row turns
        up in the feed, the node applies it like another node's."""

    # --- opening ---

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        password: str | None = None,
        node: str | None = None,
        options: PostgresOptions = PostgresOptions(),
        prune: bool = True,
    ) -> PostgresStore:
        """Connect, migrate and probe; ``StoreOpenError`` (key ``store.dsn``) naming
        the server (redacted) and the reason when it cannot be used."""
        where = redact_dsn(dsn)
        try:
            pool = await asyncpg.create_pool(
                dsn,
                password=password,
                min_size=1,
                max_size=options.pool_size,
                timeout=options.connect_timeout,
                command_timeout=options.command_timeout,
                server_settings={"application_name": "sentry"},
            )
        except Exception as exc:
            raise _open_error(exc, where) from None
        store = cls(pool, dsn, password, node or default_node(), options)
        try:
            await store._prepare()
        except BaseException:
            await store.close()
            raise
        if prune:
            store._pruner = create_task(store._prune_loop(), name="store:prune-feed")
        return store

    async def _prepare(self) -> None:
        try:
            async with self._pool.acquire() as conn:
                async with conn.transaction():
                    await migrate(conn)
                await conn.execute(_PROBE, self.node)
        except SchemaError as exc:
            raise SchemaError(f"{self.where}: {exc.problem}", _KEY) from None
        except Exception as exc:
            raise _open_error(exc, self.where) from None

    # --- calls, with faults and retries ---

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")

    async def _call(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``fn`` on a pool connection; retry a lost connection; faults
        become ``StoreUnavailable``."""
        self._check_open()
        started = time.monotonic()
        for delay in (*RETRY_DELAYS, None):
            try:
                async with self._pool.acquire(timeout=self._acquire_timeout) as conn:
                    return await fn(conn)
            except Exception as exc:
                fault = classify(exc)
                if fault is None:
                    raise
                if not self._retry(exc, fault, delay, started):
                    raise StoreUnavailable(problem_of(exc, fault, self.where)) from exc
            await asyncio.sleep(delay or 0.0)  # _retry said yes: delay is a number
        raise AssertionError("unreachable")  # pragma: no cover

    def _retry(
        self, exc: BaseException, fault: StoreFault, delay: float | None, started: float
    ) -> bool:
        """Whether to try a lost call again: only a connection that was lost or
        refused at once (a timeout means the server does not answer: waiting
        again would only hold the request), and only within
        ``connect_timeout`` of the first attempt."""
        if delay is None or self._closed or not retryable(fault):
            return False
        if isinstance(exc, TimeoutError | asyncio.TimeoutError):
            return False
        return time.monotonic() - started + delay < self.options.connect_timeout

    @property
    def _acquire_timeout(self) -> float:
        return self.options.connect_timeout + 1.0

    # --- Store protocol ---

    async def load(self) -> Snapshot:
        snapshot, self.loaded = await self.load_with_seq()
        return snapshot

    async def load_with_seq(self) -> tuple[Snapshot, int]:
        """Everything, and the feed's head at that instant (the snapshot holds
        exactly the changes of the feed rows up to it)."""
        return await self._call(read.load)

    async def apply(self, changes: Sequence[Change]) -> None:
        await self.apply_seq(changes)

    async def apply_seq(self, changes: Sequence[Change]) -> int | None:
        """``apply``, returning the change-feed ``seq`` of the transaction
        (None for an empty list: nothing is written)."""
        self._check_open()
        if not changes:
            return None
        check_changes(changes)
        plan = _Plan(changes, encode_changes(changes))
        started = time.monotonic()
        for delay in (*RETRY_DELAYS, None):
            state = _Write()
            try:
                async with self._pool.acquire(timeout=self._acquire_timeout) as conn:
                    return await self._write(conn, plan, state)
            except Exception as exc:
                fault = classify(exc)
                if fault is None:
                    raise
                if state.committing:
                    try:
                        kept = await self._committed(state, exc, fault)
                    except StoreUnavailable:
                        # Perhaps kept: if so its feed row is applied like a peer's.
                        assert state.seq is not None
                        self.uncertain.add(state.seq)
                        raise
                    if kept:
                        if state.guarded:
                            self.view = state.seq
                        return state.seq
                if not self._retry(exc, fault, delay, started):
                    raise StoreUnavailable(problem_of(exc, fault, self.where)) from exc
            await asyncio.sleep(delay or 0.0)  # _retry said yes: delay is a number
        raise AssertionError("unreachable")  # pragma: no cover

    async def _write(self, conn: Any, plan: _Plan, state: _Write) -> int | None:
        guard = None if self.view is None or _touches_only(plan.changes) else self.view
        tr = conn.transaction()
        await tr.start()
        try:
            # The feed lock first, in every write: writers are serialised for
            # the whole transaction (so a guarded check stays true until
            # COMMIT) and never wait for each other's rows in opposite order.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", FEED_LOCK)
            if guard is not None:
                behind = await _check_view(conn, guard)
                if behind is not None:
                    self._rebuild(plan, behind)  # FeedBehind unless the writer decides again
                    if not plan.changes:  # nothing left to write on the latest state
                        await tr.rollback()
                        return None
            await write_changes(conn, plan.changes)
            seq = int(await conn.fetchval(_FEED_INSERT, self.node, plan.text, self.options.channel))
        except BaseException:
            with contextlib.suppress(Exception):
                await tr.rollback()
            raise
        state.seq, state.pid, state.committing = seq, conn.get_server_pid(), True
        state.guarded = guard is not None
        await tr.commit()
        if state.guarded or self.view == seq - 1:  # nothing came between
            self.view = seq
        return seq

    def _rebuild(self, plan: _Plan, behind: FeedBehind) -> None:
        """Let the writer apply the missed rows and decide again (the feed lock
        is held: its new list is written on the latest state); ``FeedBehind``
        when it cannot (no writer hook, pruned rows) or gives up."""
        rebuild = REBUILD.get()
        new = None if rebuild is None or behind.missed is None else rebuild(behind)
        if new is None:
            raise behind
        if self.view != behind.head:
            raise behind  # the writer did not take the missed rows
        check_changes(new)
        plan.changes, plan.text = new, encode_changes(new)

    async def _committed(self, state: _Write, exc: BaseException, fault: StoreFault) -> bool:
        """After a connection lost during ``COMMIT``: did it commit? Waits for
        the old backend to end, then looks for the feed row. ``StoreUnavailable``
        when the server cannot tell (the outcome stays unknown)."""
        for delay in (*RETRY_DELAYS, None):
            try:
                async with self._pool.acquire(timeout=self._acquire_timeout) as conn:
                    if not await conn.fetchval(read.BACKEND_GONE, state.pid):
                        raise TimeoutError("the old backend is still running")
                    return bool(await conn.fetchval(read.FEED_ROW, state.seq))
            except Exception as again:
                if classify(again) is None and not isinstance(again, TimeoutError):
                    raise
            if delay is not None:
                await asyncio.sleep(delay)
        detail = f"the connection was lost during COMMIT; whether it was kept is unknown ({exc})"
        raise StoreUnavailable(problem_of(RuntimeError(detail), fault, self.where)) from exc

    async def list_associations(
        self, filter: AssociationFilter | None = None, offset: int = 0, limit: int = 100
    ) -> tuple[list[Association], int]:
        return await self._call(lambda conn: read.page(conn, filter, offset, limit))

    async def get_association(self, key: AssociationKey) -> Association | None:
        return await self._call(lambda conn: read.association(conn, key))

    async def history(self, key: AssociationKey) -> list[HistoryEvent]:
        return await self._call(lambda conn: read.history(conn, key))

    async def audit(
        self, offset: int = 0, limit: int = 100, filter: AuditFilter | None = None
    ) -> tuple[list[AuditEntry], int]:
        return await self._call(lambda conn: read.audit(conn, offset, limit, filter))

    async def check(self, *, integrity: bool = False, probe: bool = False) -> StoreProblem | None:
        """The server's problem now, or None: a round trip (``SELECT 1``);
        ``probe`` makes it a small committed write (a read-only standby, a full
        disk show). ``integrity`` adds nothing here: the server checks its pages."""
        timeout = self.options.connect_timeout

        async def run(conn: Any) -> None:
            if probe:
                await conn.execute(_PROBE, self.node, timeout=timeout)
            else:
                await conn.fetchval("SELECT 1", timeout=timeout)

        try:
            await self._call(run)
        except StoreUnavailable as exc:
            return exc.problem
        return None

    # --- the change feed ---

    async def head(self) -> int:
        """The highest committed feed ``seq`` (0 for an empty feed)."""
        return int(await self._call(lambda conn: conn.fetchval(read.HEAD)))

    async def changes_since(self, seq: int, limit: int | None = None) -> list[FeedEntry]:
        """Feed rows after ``seq``, oldest first (at most ``limit``).
        ``FeedGap`` when rows after ``seq`` were already pruned."""

        async def run(conn: Any) -> list[FeedEntry]:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                pruned = int(await conn.fetchval("SELECT through FROM change_feed_pruned"))
                if seq < pruned:
                    raise FeedGap(f"the feed was pruned through {pruned}; asked after {seq}")
                return await read.feed(conn, seq, limit)

        return await self._call(run)

    async def prune_feed(self, older_than: float | None = None) -> int:
        """Delete feed rows older than ``older_than`` seconds (default
        ``feed_retention``), never the newest row; return how many."""
        age = self.options.feed_retention if older_than is None else older_than
        return await self._call(lambda conn: read.prune(conn, age))

    def listen(self, *, keepalive: float = 5.0) -> FeedListener:
        """A listener on the feed's channel over a connection of its own
        (``async with store.listen() as feed: async for signal in feed``)."""
        return FeedListener(
            lambda: self._connect_one(),
            self.options.channel,
            keepalive=keepalive,
        )

    async def _connect_one(self) -> Any:
        return await asyncpg.connect(
            self._dsn,
            password=self._password,
            timeout=self.options.connect_timeout,
            command_timeout=self.options.command_timeout,
            server_settings={"application_name": "sentry-listen"},
        )

    async def _prune_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.prune_interval)
            with contextlib.suppress(StoreError):
                await self.prune_feed()

    # --- lifetime ---

    async def close(self) -> None:
        await cancel_wait(self._pruner)
        self._pruner = None
        if not self._closed:
            self._closed = True
            try:
                await asyncio.wait_for(self._pool.close(), self.options.connect_timeout)
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                self._pool.terminate()


def _touches_only(changes: Sequence[Change]) -> bool:
    """Last-seen times only: they commute (the newest wins in SQL and in
    memory), so they need no guard."""
    return all(type(c) is Touch for c in changes)


async def _check_view(conn: Any, view: int) -> FeedBehind | None:
    """None when the feed's head is ``view``, else a ``FeedBehind`` with the
    missed rows; the caller holds ``FEED_LOCK``, so no row can commit until
    it is done."""
    head = int(await conn.fetchval(read.HEAD))
    if head == view:
        return None
    pruned = int(await conn.fetchval("SELECT through FROM change_feed_pruned"))
    missed = None if view < pruned else await read.feed(conn, view, None)
    return FeedBehind(view, head, missed)


@dataclass
class _Plan:
    """What one ``apply`` writes: the writer may decide again (``REBUILD``)."""

    changes: Sequence[Change]
    text: str


def _open_error(exc: BaseException, where: str) -> StoreOpenError:
    """One line naming the (redacted) server and what went wrong."""
    fault = classify(exc)
    if fault is None:
        return StoreOpenError(f"{where}: cannot be used: {type(exc).__name__}: {exc}", _KEY)
    detail = problem_of(exc, fault, where).detail
    if fault is StoreFault.UNREACHABLE:
        return StoreOpenError(f"cannot connect to {detail}", _KEY)
    return StoreOpenError(f"{detail} ({fault.value})", _KEY)
