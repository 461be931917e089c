"""The shell around the pure policy: decide, persist, revoke.

``AccessState`` owns the in-memory ``Snapshot``, the ``Store`` behind it and the
registry of held long polls. Every change to the state goes through ONE path,
``commit(build)``: the proxy's request decisions, the backend's first
acceptance, the ActiveSync policy a Provision answer carried, every admin
action (``AdminContext.commit``), a configuration reload, the expiry sweep,
and the scripted conversation of the scenario tests
(``sentry.testing.conversation``). Under the writer lock ``build(snapshot,
now)`` returns the changes; they are written to the store; then ``absorb``
(the pure planner ``sentry.policy.planner``) applies them to the snapshot,
records the decisions they moved and names the held polls to end. Changes
that are already durable elsewhere (another node's change feed) enter
through ``absorb`` alone. On a shared store (several nodes, ``sentry.cluster``)
a write finds out, under the store's feed lock, when another node wrote
since the state it was built on (``FeedBehind``): the node takes the missed
rows (``take_missed``) and ``build`` runs again, inside the same
transaction, so what is written was decided on the latest state. Rules it
keeps:

* The hot path makes no database round trip: a known association whose state
  did not change yields only a ``Touch``, kept in memory and written in batches
  (``sentry.lastseen``; the periodic chores and the state gauges are
  ``sentry.housekeeping``).
* A state change (first sight, decision change, wipe acknowledgement, admin
  action) is written to the store *before* it is applied to the snapshot, so
  its effect is never visible before it is durable. Writers are serialised by
  one lock, and a request that must write decides again under the lock, so two
  concurrent first requests cannot both count as "the first device".
* When the store cannot be written, the request is decided again as "registry
  unreachable": known associations keep their last state and new ones follow
  the new-device-access preference (design §5.9). The gateway never forwards
  by accident because a write failed. A store that knows it is failing
  (``StoreUnavailable``, see ``store_watch``) refuses at once; it has logged
  and counted the failure itself, so the request path does not, once per
  request.
* After every applied change, held long polls of the affected associations
  are re-evaluated and those no longer allowed are ended at once, before the
  refreshed decisions (derived data) are written: a block reaches a held
  Ping one transaction sooner.
* The proxy reports each forwarded request's upstream status
  (``backend_answered``). The first one the backend *accepts* (2xx, 449 or
  451: it authenticated the user; a 401 or any other answer is not
  acceptance) makes the association verified and may establish its device's
  backend type; that is one write, once per association. Unverified rows
  not seen for ``unverified_expiry_seconds`` are removed by
  ``expire_unverified`` (run periodically by ``sentry.housekeeping``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from typing import Any

import structlog

from sentry.aio import uncancellable
from sentry.eas.request import EasRequest
from sentry.eas.status import CommonStatus
from sentry.lastseen import LastSeen
from sentry.longpolls import HeldPoll, LongPolls
from sentry.model import AssociationKey, Reason
from sentry.observability import Metrics
from sentry.policy import (
    Change,
    Changes,
    Decision,
    DeleteAssociation,
    Outcome,
    Refuse,
    RequestFacts,
    Snapshot,
    Touch,
    backend_accepted,
    decide,
    evaluate,
    expire_unverified,
)
from sentry.policy.decisions import Forward
from sentry.policy.planner import NOTHING, Absorbed, absorb
from sentry.serial import SerialRunner
from sentry.store.base import Store, StoreUnavailable
from sentry.store.feed import REBUILD, FeedBehind

__all__ = [
    "ACCEPTED_STATUSES",
    "AccessState",
    "Build",
    "CatchUp",
    "Committed",
    "TakeMissed",
    "backend_accepts",
]

Build = Callable[[Snapshot, float], Sequence[Change]]
"""Builds a change list from (snapshot, now) under the writer lock; raises to refuse."""

TakeMissed = Callable[[FeedBehind], "bool | None"]
"""Applies the rows a write missed at once (inside the write's transaction,
writer lock held): whether the state changed, None when it cannot (the rows
were pruned). Set by ``sentry.cluster``."""

CatchUp = Callable[[FeedBehind], Awaitable[bool]]
"""``TakeMissed`` outside a transaction (it may reload the whole state)."""

BEHIND_RETRIES = 10
"""Writes of one commit whose missed rows could not be taken inside the
transaction (caught up outside it, then built again) before it gives up."""


@dataclass(frozen=True, slots=True)
class Committed:
    """What one commit (or absorb) did."""

    changes: Changes
    """The change list written (or absorbed), as built."""
    absorbed: Absorbed
    """The planner's result: affected keys, revocations, refreshed decisions."""
    ended: int
    """Held long polls ended."""
    held: tuple[HeldPoll[AssociationKey, Decision], ...] = ()
    """With ``answer_first``: the polls the change refuses, marked but not yet
    answered (``AccessState.answer_held``)."""
    write_seconds: float = 0.0
    """How long the store write took (0 for an absorb)."""
    absorb_seconds: float = 0.0
    """How long applying the changes to the snapshot took."""


_CANNOT_DECIDE = Refuse(
    CommonStatus.DeviceIsBlockedForThisUser, frozenset({Reason.REGISTRY_UNREACHABLE})
)
"""The refusal when a state change could not be written for another reason than
the store being unavailable: the state is unknown, so the gateway fails closed."""

log = structlog.get_logger("sentry.access")

ANSWER_FIRST_FALLBACK_SECONDS = 0.5
"""With ``answer_first``, marked polls are answered at the latest this long
after the commit, should the caller never get to ``answer_held`` (it was
cancelled, or failed building its own answer)."""

LARGE_COMMIT = 300
"""Commits of this many changes or more are logged with their phases
(``large_commit``: build, write, absorb), so a slow bulk action shows where
its time went."""

ACCEPTED_STATUSES = frozenset({449, 451})
"""Non-2xx answers that still prove the backend authenticated the user:
provisioning required, and a redirect to the mailbox's server."""


def backend_accepts(http_status: int) -> bool:
    """Whether an upstream answer shows the backend accepted the credentials
    (2xx, 449, 451). A 401 is the backend refusing them; 5xx, 403 and the
    rest prove nothing, so they never verify an association."""
    return 200 <= http_status < 300 or http_status in ACCEPTED_STATUSES


class AccessState:
    """Decisions against the snapshot, persisted through the store."""

    def __init__(
        self,
        store: Store,
        snapshot: Snapshot,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
        unverified_expiry_seconds: float = 86400.0,
        longpolls: LongPolls[AssociationKey, Decision] | None = None,
    ) -> None:
        self.store = store
        self.snapshot = snapshot
        self.metrics = metrics
        self.clock = clock
        self.longpolls: LongPolls[AssociationKey, Decision] = (
            LongPolls() if longpolls is None else longpolls
        )
        self._lock = asyncio.Lock()
        self._serial = SerialRunner(self._lock, name="access:commits")
        self.lastseen = LastSeen(store)
        self._expiry = unverified_expiry_seconds
        self.take_missed: TakeMissed | None = None  # a shared store: sentry.cluster
        self.catch_up: CatchUp | None = None

    # -- the one commit path ---------------------------------------------------

    async def commit(
        self,
        build: Build,
        *,
        in_thread: bool = False,
        executor: Executor | None = None,
        kept: AssociationKey | None = None,
        answer_first: bool = False,
    ) -> Committed:
        """The single write path: under the writer lock, ``build(snapshot, now)``
        returns the changes (it raises to refuse, and then nothing changes);
        they are written to the store in one transaction, then absorbed
        (``absorb``), and the decisions they moved are written too.

        ``in_thread`` runs ``build`` in a worker thread (``executor``), for a
        large pure plan (a directory sync of thousands of users) that would
        otherwise hold the event loop; the lock is held meanwhile, so nothing
        the plan reads changes under it. ``kept``: a row whose recorded
        decision the refresh leaves as the changes wrote it (``planner.absorb``).
        ``answer_first``: the held polls the change refuses are marked but not
        answered yet: the caller answers its own request, then calls
        ``answer_held`` (an admin's bulk block of 1,000 returns before the
        1,000 Pings are answered, instead of after them).

        Only the first write decides success: if the store fails on the
        second, the refreshed decisions stay recorded in memory (they follow
        from what is durable and are derived again at the next request), so
        the "registry unreachable" decisions that follow, which use the
        recorded decision, agree with the change. A caller cancelled before its
        build ran is dropped; one cancelled later waits until the snapshot
        matches the store (a device that hangs up mid-write), then stops.

        On a store of its own (SQLite, one process), commits queue and one
        task runs them in order, each built on the state the ones before it
        left, under the writer lock (``sentry.serial.SerialRunner``: on a
        saturated loop a commit then costs only the turns of its own writes).
        On a shared store each commit takes the lock and runs its build and
        write in a task of its own (below)."""

        def run() -> Coroutine[Any, Any, Committed]:
            return self._commit_now(build, in_thread, executor, kept, answer_first)

        if self.take_missed is not None:
            # A shared store (several nodes or workers): each commit waits
            # for the lock and runs in a task of its own. Run back to back,
            # a worker's writes outran its follower: every other worker's
            # notification found it behind and read the feed again (17x the
            # catch-up reads), and 4 workers on PostgreSQL primed 15 % fewer
            # first sights a second (bench held-pings, 14 runs each).
            async with self._lock:
                return await uncancellable(run(), name="access:commit")
        return await self._serial.run(run)

    async def _commit_now(
        self,
        build: Build,
        in_thread: bool,
        executor: Executor | None,
        kept: AssociationKey | None,
        answer_first: bool,
    ) -> Committed:
        """Build, write, absorb (writer lock held); built again after catching
        up with a shared store that moved meanwhile."""
        for _ in range(BEHIND_RETRIES):
            started = time.perf_counter()
            if in_thread:
                loop = asyncio.get_running_loop()
                changes = await loop.run_in_executor(executor, build, self.snapshot, self.clock())
            else:
                changes = build(self.snapshot, self.clock())
            built = time.perf_counter() - started
            try:
                rebuild = None if in_thread else build
                if changes:
                    committed = await self._write(tuple(changes), kept, rebuild, answer_first)
                else:
                    committed = Committed((), NOTHING, 0)
                if len(committed.changes) >= LARGE_COMMIT:
                    total = time.perf_counter() - started
                    _log_large(committed, built, total)
                return committed
            except FeedBehind as exc:
                # rows that could not be taken inside the transaction
                # (pruned: a reload): catch up, then build again
                if self.catch_up is None:
                    raise
                await self.catch_up(exc)
        raise FeedBehind(0, 0, ())  # pragma: no cover - other nodes never let it write

    @property
    def writer(self) -> asyncio.Lock:
        """The one lock every writer holds. Only a step that must exclude all
        writers around more than a change list (a store recovery) takes it
        itself, then calls ``commit_held``."""
        return self._lock

    async def commit_held(self, build: Build) -> Committed:
        """``commit`` for a caller that already holds ``writer``."""
        assert self._lock.locked(), "commit_held needs the writer lock"
        return await self._commit_held(build(self.snapshot, self.clock()), None, build)

    async def _commit_held(
        self,
        changes: Sequence[Change],
        kept: AssociationKey | None = None,
        build: Build | None = None,
        answer_first: bool = False,
    ) -> Committed:
        if not changes:
            return Committed((), NOTHING, 0)
        write = self._write(tuple(changes), kept, build, answer_first)
        return await uncancellable(write, name="access:commit")

    def answer_held(self, committed: Committed) -> None:
        """Answer the polls an ``answer_first`` commit marked (idempotent)."""
        self.longpolls.end(committed.held)

    async def _write(
        self,
        changes: Changes,
        kept: AssociationKey | None,
        build: Build | None,
        answer_first: bool = False,
    ) -> Committed:
        final = [changes]

        def again(exc: FeedBehind) -> Sequence[Change] | None:
            # Another node wrote since the state ``changes`` were built on
            # (perhaps this very mailbox's or device's first sight): take its
            # rows and build again; that is written, in the same transaction.
            if build is None or self.take_missed is None or self.take_missed(exc) is None:
                return None
            final[0] = tuple(build(self.snapshot, self.clock()))
            return final[0]

        token = REBUILD.set(again)
        began = time.perf_counter()
        try:
            await self.store.apply(changes)
        finally:
            REBUILD.reset(token)
        changes = final[0]
        written = time.perf_counter()
        absorbed, marked = self._absorb(changes, kept, end=not answer_first)
        absorbed_at = time.perf_counter()
        if marked and answer_first:
            loop = asyncio.get_running_loop()
            loop.call_later(ANSWER_FIRST_FALLBACK_SECONDS, self.longpolls.end, marked)
        if absorbed.refreshed:
            with contextlib.suppress(StoreUnavailable, FeedBehind):
                await self.store.apply(absorbed.refreshed)
        held = tuple(marked) if answer_first else ()
        return Committed(
            changes, absorbed, len(marked), held, written - began, absorbed_at - written
        )

    def absorb(self, changes: Sequence[Change]) -> Committed:
        """Take in changes that are ALREADY durable (e.g. read from another
        node's change feed): the planner applies them to the snapshot and
        records the decisions they moved, in memory only (no store write),
        and the held polls they refuse are ended."""
        absorbed, marked = self._absorb(changes)
        return Committed(tuple(changes), absorbed, len(marked))

    def replace_snapshot(self, snapshot: Snapshot) -> int:
        """Take a freshly loaded state (a node too far behind the shared
        store's feed reloads); end the held polls it refuses. Caller holds
        ``writer``. Returns the polls ended."""
        self.snapshot = snapshot
        now, ended = self.clock(), 0
        for key in sorted(self.longpolls.keys()):
            decision = evaluate(key, snapshot, now)
            if not isinstance(decision, Forward):
                ended += self.longpolls.revoke(key, decision)
        if ended:
            self.metrics.revocations.inc(ended)
        self.metrics.publish_state(snapshot)
        return ended

    def _absorb(
        self, changes: Sequence[Change], kept: AssociationKey | None = None, *, end: bool = True
    ) -> tuple[Absorbed, list[HeldPoll[AssociationKey, Decision]]]:
        """Apply ``changes`` to the snapshot and mark the held polls they
        refuse; ``end``: answer those at once (else the caller does)."""
        held = self.longpolls.keys()
        absorbed = absorb(changes, self.snapshot, held, self.clock(), kept=kept)
        marked: list[HeldPoll[AssociationKey, Decision]] = []
        for key, decision in absorbed.revoked:
            marked += self.longpolls.mark(key, decision)
        if end:
            self.longpolls.end(marked)
        if marked:
            self.metrics.revocations.inc(len(marked))
        return absorbed, marked

    async def apply(self, changes: Sequence[Change]) -> int:
        """Commit a change list built beforehand (tests, tools); return the
        held polls ended. Building under the lock (``commit``) is the rule."""
        return (await self.commit(lambda _snapshot, _now: changes)).ended

    # -- requests ---------------------------------------------------------------

    async def decide(self, request: EasRequest, facts: RequestFacts) -> Outcome:
        """Decide a request; persist what changed before answering."""
        outcome = decide(request, facts, self.snapshot, self.clock())
        if not _durable(outcome.changes):
            self._remember_touches(outcome.changes)
            return outcome
        decided: list[Outcome] = []

        def build(snapshot: Snapshot, now: float) -> list[Change]:
            # Decided again under the lock: two concurrent first requests
            # cannot both count as "the first device".
            decided.append(decide(request, facts, snapshot, now))
            return _durable(decided[-1].changes)

        # During a registry outage the row records the decision the device gets.
        kept = None if facts.registry_reachable else outcome.association.key
        try:
            await self.commit(build, kept=kept)
        except StoreUnavailable:
            unreachable = replace(facts, registry_reachable=False)
            return decide(request, unreachable, self.snapshot, self.clock())
        except Exception:
            # Not the store being unavailable but a write it refused (a bug,
            # or data it cannot hold): the gateway cannot know the state, so
            # it refuses (fail closed). Treating this as "registry
            # unreachable" would let a new device through whatever
            # auto-block says, whenever it can make its own write fail.
            log.exception("store_write_failed", during="request")
            refusal = replace(_CANNOT_DECIDE, style=self.snapshot.prefs.refusal_style)
            return Outcome(refusal, (), (decided or [outcome])[-1].association)
        outcome = decided[-1]
        self._remember_touches(outcome.changes)
        return outcome

    def _remember_touches(self, changes: Sequence[Change]) -> None:
        touches = [c for c in changes if isinstance(c, Touch)]
        if touches:
            self.snapshot.apply(touches)
            self.lastseen.remember(touches)

    async def backend_answered(self, key: AssociationKey, http_status: int) -> None:
        """The backend answered a request forwarded for ``key``: the first
        accepted answer verifies the row (and may establish its device's
        backend type, ending held polls of rows that thereby mix types)."""
        if not backend_accepts(http_status):
            return
        row = self.snapshot.get(key)
        if row is None or row.verified_at is not None:
            return  # the usual case: no write
        try:
            await self.commit(lambda snapshot, now: backend_accepted(snapshot, key, now))
        except Exception:
            self.metrics.store_errors.inc()
            log.exception("store_write_failed", during="verification")

    async def expire_unverified(self) -> int:
        """Remove unverified rows not seen for the configured time; return how many."""
        if self._expiry <= 0 or not self.snapshot.unverified():
            return 0
        expiry = self._expiry
        done = await self.commit(lambda snapshot, now: expire_unverified(snapshot, now, expiry))
        expired = sum(1 for c in done.changes if isinstance(c, DeleteAssociation))
        if expired:
            log.info("unverified_expired", count=expired, max_age_seconds=self._expiry)
        return expired

    # -- last-seen batching (sentry.lastseen) ----------------------------------

    async def flush_touches(self) -> int:
        """Write the batched last-seen timestamps; return how many."""
        return await self.lastseen.flush()


def _durable(changes: Sequence[Change]) -> list[Change]:
    return [c for c in changes if not isinstance(c, Touch)]


def _log_large(committed: Committed, built: float, total: float) -> None:
    log.info(
        "large_commit",
        changes=len(committed.changes),
        polls_ended=committed.ended,
        build_ms=round(built * 1e3, 1),
        write_ms=round(committed.write_seconds * 1e3, 1),
        absorb_ms=round(committed.absorb_seconds * 1e3, 1),
        total_ms=round(total * 1e3, 1),
    )
