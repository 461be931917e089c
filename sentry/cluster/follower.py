"""``Follower``: one node's view of the other nodes' changes (issue 13 item 2).

Approach. Every node of a scale-out keeps its whole state in memory and
decides locally; every change it makes is committed to PostgreSQL with a row
in the sequence-numbered change feed and a ``NOTIFY`` (``PostgresStore``).
The follower makes the other nodes' changes this node's:

- ``view`` (kept on the store, ``PostgresStore.view``) is the feed ``seq``
  the snapshot holds: the head at load time, then every row applied.
- It LISTENs (``PostgresStore.listen``: a connection of its own that
  reconnects); each notification of another node's row, each (re)connection
  (``resumed``: notifications may have been missed) and a periodic poll
  (``poll_interval``: the safety net) read ``changes_since(view)`` and hand
  each row's changes to ``AccessState.absorb`` under the writer lock: the
  snapshot takes them, held Pings they refuse end, moved decisions are
  refreshed in memory. A notification is a wake-up call, not the data: a
  dropped connection or a lost notification loses nothing.
- This node's own rows are skipped (already in memory), except those whose
  COMMIT outcome the store could not learn (``PostgresStore.uncertain``).
- A write is guarded: the store writes only if the feed's head is ``view``,
  under the feed lock, so every decision that writes (a first sight, a
  verification that establishes a backend type, an admin change) was made on
  the latest state; otherwise ``_take_missed`` applies the missed rows
  inside that transaction and ``AccessState.commit`` builds the change
  again (``FeedBehind`` outside it: ``_behind``, which may reload). So
  the limits (devices per mailbox, mailboxes per device) and the one backend
  type per device hold when first requests arrive on two nodes at once.
- When the rows after ``view`` were pruned (``FeedGap``, a node cut off for
  longer than ``store.feed_retention_seconds``) or cannot be read
  (``FeedFormatError``), the node reloads the whole state and ends the held
  Pings the reloaded state refuses.

Metrics: ``sentry_cluster_lag_seconds{peer}`` (when this node applied a
peer's row minus when it was committed; while the feed cannot be read, the
time since the last successful read), ``sentry_cluster_notifications_total``,
``sentry_cluster_changes_applied_total``, ``sentry_cluster_catchups_total
{trigger}``, ``sentry_cluster_reloads_total`` and ``sentry_cluster_listening``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence

import structlog

from sentry.access import AccessState
from sentry.aio import create_task
from sentry.observability import Metrics
from sentry.policy import Change, Touch
from sentry.store._pg_listen import FeedListener
from sentry.store.base import StoreError
from sentry.store.feed import FeedBehind, FeedEntry, FeedFormatError
from sentry.store.postgres import FeedGap, PostgresStore

__all__ = ["BATCH", "PEER_FORGET_SECONDS", "Follower"]

log = structlog.get_logger("sentry.cluster")

BATCH = 500
"""Feed rows read per query while catching up."""

STOP_SECONDS = 5.0
"""How long stopping waits for the cancelled listen and poll tasks."""

PEER_FORGET_SECONDS = 900.0
"""A peer not heard from for this long loses its lag sample (node names
change at every start: the label set stays bounded)."""


class Follower:
    """Applies other nodes' changes to this node's ``AccessState``."""

    def __init__(
        self,
        state: AccessState,
        store: PostgresStore,
        metrics: Metrics,
        *,
        view: int,
        poll_interval: float = 2.0,
        keepalive: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self.store = store
        self.metrics = metrics
        self.poll_interval = poll_interval
        self.keepalive = keepalive
        self.clock = clock
        store.view = view
        state.catch_up = self._behind
        state.take_missed = self._take_missed
        self._reading = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._listener_connected = False
        self._feed: FeedListener | None = None
        self._peers: dict[str, float] = {}  # peer -> when last heard (local clock)
        self.last_read: float = clock()  # the last successful read of the feed
        self.problem: str | None = None  # why the feed cannot be read now
        self.applied = 0  # peer rows applied, ever

    @property
    def view(self) -> int:
        """The feed ``seq`` this node's state holds."""
        return self.store.view or 0

    @property
    def listening(self) -> bool:
        return self._listener_connected

    def start(self) -> None:
        """Listen and poll (tasks of their own)."""
        self.metrics.cluster_listening.set(0)
        self._tasks = [
            create_task(self._listen(), name="cluster:listen"),
            create_task(self._poll(), name="cluster:poll"),
        ]

    async def stop_following(self) -> None:
        """Stop listening and polling, keep catching up on this node's own
        writes (a node that misses every notification; used by tests)."""
        await self._stop_tasks()
        self._set_listening(False)

    async def close(self) -> None:
        await self._stop_tasks()
        self.state.catch_up = None
        self.state.take_missed = None
        self.metrics.cluster_listening.set(0)

    async def _stop_tasks(self) -> None:
        """Cancel the listen and poll tasks and wait for them, at most
        ``STOP_SECONDS``: a task stuck in a driver call that does not give way
        to the cancellation (the feed connection's close, a query's cancel)
        must not hang the node's shutdown. One that is left is logged."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        ended, stuck = await asyncio.wait(tasks, timeout=STOP_SECONDS)
        for task in ended:
            if not task.cancelled() and task.exception() is not None:
                log.warning(
                    "cluster_task_failed", task=task.get_name(), error=repr(task.exception())
                )
        if stuck:
            log.warning(
                "cluster_task_stuck", tasks=sorted(t.get_name() for t in stuck),
                seconds=STOP_SECONDS,
            )  # fmt: skip

    def problems(self) -> list[str]:
        """What ``/readyz`` reports: the node may be behind the others."""
        out = []
        if not self._listener_connected:
            out.append("cluster: not listening to the change feed (changes of other nodes wait)")
        if self.problem is not None:
            since = round(self.clock() - self.last_read, 1)
            out.append(f"cluster: cannot read the change feed for {since} s: {self.problem}")
        return out

    # -- the loops ---------------------------------------------------------------

    async def _listen(self) -> None:
        async with self.store.listen(keepalive=self.keepalive) as feed:
            self._feed = feed
            async for signal in feed:
                self._set_listening(feed.connected)
                if signal.resumed:
                    log.info("cluster_feed_resumed", reconnects=feed.reconnects, view=self.view)
                    await self.catch_up("resumed")
                    continue
                if signal.node == self.store.node or (
                    signal.seq is not None and signal.seq <= self.view
                ):
                    continue
                self.metrics.cluster_notifications.inc()
                await self.catch_up("notify")

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            self._set_listening(self._feed is not None and self._feed.connected)
            await self.catch_up("poll")
            self._publish_lag_while_failing()

    def _set_listening(self, connected: bool) -> None:
        if connected != self._listener_connected:
            self._listener_connected = connected
            self.metrics.cluster_listening.set(1 if connected else 0)
            log.info("cluster_listening" if connected else "cluster_not_listening")

    # -- catching up ---------------------------------------------------------------

    async def catch_up(self, trigger: str) -> int:
        """Read and apply what other nodes committed after ``view``; return
        the rows applied. A store failure is remembered (``problem``) and
        retried at the next signal or poll."""
        async with self._reading:
            applied = 0
            try:
                while True:
                    entries = await self.store.changes_since(self.view, limit=BATCH)
                    if entries:
                        async with self.state.writer:
                            applied += self._take(entries)
                    if len(entries) < BATCH:
                        break
            except (FeedGap, FeedFormatError) as exc:
                async with self.state.writer:
                    await self._reload_held(str(exc))
            except StoreError as exc:
                self._failed(str(exc))
                return applied
            self._read_ok()
            if applied:  # rows that changed the state (not only last-seen times)
                self.metrics.cluster_catchups.labels(trigger).inc()
            return applied

    async def _behind(self, exc: FeedBehind) -> bool:
        """A guarded write of this node found newer rows (writer lock held):
        apply them so the caller decides again on the latest state. True when
        the state changed (more than this node's own rows or last-seen times)."""
        self.metrics.cluster_catchups.labels("write").inc()
        if exc.missed is None:
            await self._reload_held(f"{exc}; the rows after {exc.view} were pruned")
            return True
        return self._take(exc.missed) > 0

    def _take_missed(self, exc: FeedBehind) -> bool | None:
        """``_behind`` inside the write's transaction (no reload there: None
        when the rows were pruned)."""
        if exc.missed is None:
            return None
        self.metrics.cluster_catchups.labels("write").inc()
        return self._take(exc.missed) > 0

    def _take(self, entries: Sequence[FeedEntry]) -> int:
        """Apply ``entries`` past ``view`` (writer lock held); return how many
        of them changed more than last-seen times."""
        rows = changed = 0
        now = self.clock()
        for entry in entries:
            if entry.seq <= self.view:
                continue  # applied meanwhile (by this node's write, or a read before)
            mine = entry.node == self.store.node
            if mine and entry.seq not in self.store.uncertain:
                self.store.view = entry.seq
                continue
            self.store.uncertain.discard(entry.seq)
            self._absorb(entry.changes)
            self.store.view = entry.seq
            rows += 1
            changed += any(type(c) is not Touch for c in entry.changes)
            if not mine:
                self._peers[entry.node] = now
                self.metrics.cluster_lag.labels(entry.node).set(max(0.0, now - entry.at))
        if rows:
            self.applied += rows
            self.metrics.cluster_applied.inc(rows)
        self._forget_peers(now)
        return changed

    def _absorb(self, changes: Sequence[Change]) -> None:
        # last-seen times move no decision: a peer's batch of them costs no evaluation
        touches = [c for c in changes if type(c) is Touch]
        if len(touches) == len(changes):
            self.state.snapshot.apply(touches)
            return
        ended = self.state.absorb(changes).ended
        if ended:
            log.info("cluster_polls_ended", ended=ended, view=self.view)

    async def _reload_held(self, why: str) -> None:
        """Load the whole state again (writer lock held)."""
        log.warning("cluster_reload", reason=why, view=self.view)
        snapshot, seq = await self.store.load_with_seq()
        ended = self.state.replace_snapshot(snapshot)
        self.store.view = seq
        self.store.uncertain.clear()
        self.metrics.cluster_reloads.inc()
        log.info("cluster_reloaded", view=seq, polls_ended=ended)

    # -- health and lag --------------------------------------------------------------

    def _failed(self, problem: str) -> None:
        if self.problem is None:
            log.warning("cluster_feed_unreadable", problem=problem, view=self.view)
        self.problem = problem

    def _read_ok(self) -> None:
        if self.problem is not None:
            log.info("cluster_feed_readable", view=self.view, after=self.clock() - self.last_read)
        self.problem = None
        self.last_read = self.clock()

    def _publish_lag_while_failing(self) -> None:
        """While the feed cannot be read, every peer's lag is the time since
        the last successful read (it grows until the node catches up)."""
        if self.problem is None:
            return
        behind = max(0.0, self.clock() - self.last_read)
        for peer in self._peers:
            self.metrics.cluster_lag.labels(peer).set(behind)

    def _forget_peers(self, now: float) -> None:
        for peer, heard in list(self._peers.items()):
            if now - heard > PEER_FORGET_SECONDS:
                del self._peers[peer]
                with contextlib.suppress(KeyError):
                    self.metrics.cluster_lag.remove(peer)
