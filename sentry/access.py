"""The shell around the pure policy: decide, persist, revoke.

``AccessState`` owns the in-memory ``Snapshot``, the ``Store`` behind it and the
registry of held long polls. The proxy asks it for a decision per request; the
admin API hands it the changes of an admin action. Rules it keeps:

* The hot path makes no database round trip: a known association whose state
  did not change yields only a ``Touch``, kept in memory and written in batches
  every ``touch_flush_seconds``.
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
  are re-evaluated and those no longer allowed are ended at once.
* The proxy reports each forwarded request's upstream status
  (``backend_answered``). The first one the backend *accepts* (2xx, 449 or
  451: it authenticated the user; a 401 or any other answer is not
  acceptance) makes the association verified and may establish its device's
  backend type; that is one write, once per association. Unverified rows
  not seen for ``unverified_expiry_seconds`` are removed by the periodic
  loop (``expire_unverified``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

import structlog

from sentry.aio import create_task, uncancellable
from sentry.eas.request import EasRequest
from sentry.eas.status import CommonStatus
from sentry.model import AssociationKey, Reason, UserSource
from sentry.observability import Metrics
from sentry.policy import (
    Change,
    Decision,
    DeleteAssociation,
    Forward,
    Outcome,
    Refuse,
    RequestFacts,
    Snapshot,
    Touch,
    affected_keys,
    backend_accepted,
    decide,
    evaluate,
    expire_unverified,
    refresh,
)
from sentry.policy.errors import ConflictError
from sentry.proxy.longpolls import LongPolls
from sentry.store.base import Store, StoreUnavailable
from sentry.store.feed import REBUILD, FeedBehind, Rebuild

__all__ = [
    "ACCEPTED_STATUSES",
    "AccessState",
    "CatchUp",
    "StaleState",
    "TakeMissed",
    "backend_accepts",
]

TakeMissed = Callable[[FeedBehind], "bool | None"]
"""Applies the missed rows of a ``FeedBehind`` at once (inside the write's
transaction, writer lock held): whether the state changed, None when it
cannot (the rows were pruned)."""

CatchUp = Callable[[FeedBehind], Awaitable[bool]]
"""Absorbs the feed rows a refused guarded write missed (``sentry.cluster``;
called with the writer lock held); True when the state changed (not only
this node's own rows or last-seen times)."""

BEHIND_RETRIES = 10
"""How often a request is decided again after its write found the node behind
the shared store, before it is refused (fail closed)."""


class StaleState(ConflictError):
    """An admin change was built on a state another gateway node has changed
    since: nothing was written, this node has caught up; build it again (409)."""

    def __init__(self) -> None:
        super().__init__(
            "the state changed on another gateway node meanwhile: nothing was changed; "
            "this node has caught up, try again"
        )


_CANNOT_DECIDE = Refuse(
    CommonStatus.DeviceIsBlockedForThisUser, frozenset({Reason.REGISTRY_UNREACHABLE})
)
"""The refusal when a state change could not be written for another reason than
the store being unavailable: the state is unknown, so the gateway fails closed."""

log = structlog.get_logger("sentry.access")

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
        touch_flush_seconds: float | None = 5.0,
        unverified_expiry_seconds: float = 86400.0,
    ) -> None:
        self.store = store
        self.snapshot = snapshot
        self.metrics = metrics
        self.clock = clock
        self.longpolls: LongPolls[AssociationKey, Decision] = LongPolls()
        self._lock = asyncio.Lock()
        self._touches: dict[AssociationKey, Touch] = {}
        self._flush_every = touch_flush_seconds
        self._expiry = unverified_expiry_seconds
        self._flusher: asyncio.Task[None] | None = None
        self._ended = 0  # held polls ended by revocation, ever
        self.catch_up: CatchUp | None = None  # set by sentry.cluster on a shared store
        self.take_missed: TakeMissed | None = None  # likewise

    # -- requests ---------------------------------------------------------------

    async def decide(self, request: EasRequest, facts: RequestFacts) -> Outcome:
        """Decide a request; persist what changed before answering."""
        outcome = decide(request, facts, self.snapshot, self.snapshot.prefs, self.clock())
        if not _durable(outcome.changes):
            self._remember_touches(outcome.changes)
            return outcome
        async with self._lock:
            for _ in range(BEHIND_RETRIES):
                latest = [decide(request, facts, self.snapshot, self.snapshot.prefs, self.clock())]

                def again(
                    exc: FeedBehind, latest: list[Outcome] = latest
                ) -> Sequence[Change] | None:
                    # another node wrote first (perhaps this very mailbox's or
                    # device's first sight): take its rows, decide again, write
                    # that in the same transaction
                    if self._take_missed(exc) is None:
                        return None
                    o = decide(request, facts, self.snapshot, self.snapshot.prefs, self.clock())
                    latest[0] = o
                    return _durable(o.changes)

                outcome = latest[0]
                durable = _durable(outcome.changes)
                try:
                    await self._commit(durable, again)
                    outcome = latest[0]
                except FeedBehind as exc:
                    # Another node wrote first (perhaps this very mailbox's or
                    # device's first sight): take its changes, decide again.
                    if await self._caught_up(exc, during="request"):
                        continue
                    return Outcome(_CANNOT_DECIDE, (), outcome.association)
                except StoreUnavailable:
                    unreachable = replace(facts, registry_reachable=False)
                    return decide(
                        request, unreachable, self.snapshot, self.snapshot.prefs, self.clock()
                    )
                except Exception:
                    # Not the store being unavailable but a write it refused (a
                    # bug, or data it cannot hold): the gateway cannot know the
                    # state, so it refuses (fail closed). Treating this as
                    # "registry unreachable" would let a new device through
                    # whatever auto-block says, whenever it can make its own
                    # write fail.
                    log.exception("store_write_failed", during="request")
                    return Outcome(_CANNOT_DECIDE, (), outcome.association)
                break
            else:
                log.error("store_write_failed", during="request", error="behind the feed")
                return Outcome(_CANNOT_DECIDE, (), outcome.association)
        self._remember_touches(outcome.changes)
        return outcome

    def _take_missed(self, exc: FeedBehind) -> bool | None:
        if self.take_missed is None:
            return None
        return self.take_missed(exc)

    async def _caught_up(self, exc: FeedBehind, *, during: str) -> bool:
        """Absorb what a refused guarded write missed (caller holds the lock);
        False when there is nobody to do it or it failed (fail closed)."""
        return await self._absorb_missed(exc, during=during) is not None

    async def _absorb_missed(self, exc: FeedBehind, *, during: str) -> bool | None:
        """``catch_up``: whether the state changed; None when it failed."""
        if self.catch_up is None:
            log.error("store_write_failed", during=during, error=str(exc))
            return None
        try:
            return await self.catch_up(exc)
        except Exception:
            log.exception("catch_up_failed", during=during)
            return None

    async def _commit(
        self, changes: Sequence[Change], rebuild: Rebuild | None = None
    ) -> set[AssociationKey]:
        """Write then apply ``changes``, end the held polls they revoke, then
        record the decisions they moved; return the keys whose decision may
        have changed. Caller holds the lock.

        Revocation comes right after the write that causes it, before the
        refreshed decisions (derived data) are written: a block reaches a held
        Ping one transaction sooner. Only the first write decides success: if
        the store fails on the second, the refreshed decisions are still
        recorded in memory (they follow from what is durable and are derived
        again at the next request), so the "registry unreachable" decisions
        that follow, which use the recorded decision, agree with the change.
        A caller cancelled meanwhile (a device that hangs up) waits until the
        snapshot matches the store. ``rebuild`` (a shared store): when another
        node wrote first, it takes the missed rows and decides again, and
        that is written instead, in the same transaction."""
        if not changes:
            return set()
        return await uncancellable(self._write(changes, rebuild), name="access:commit")

    async def _write(
        self, changes: Sequence[Change], rebuild: Rebuild | None
    ) -> set[AssociationKey]:
        final = [changes]

        def again(exc: FeedBehind) -> Sequence[Change] | None:
            assert rebuild is not None
            new = rebuild(exc)
            if new is not None:
                final[0] = new
            return new

        token = REBUILD.set(None if rebuild is None else again)
        try:
            await self.store.apply(changes)
        finally:
            REBUILD.reset(token)
        changes = final[0]  # decided again on the latest state if another node wrote first
        keys = affected_keys(changes, self.snapshot)
        self.snapshot.apply(changes)
        self._revoke(keys)
        moved = refresh(keys, self.snapshot, self.snapshot.prefs, self.clock())
        if moved:
            with contextlib.suppress(StoreUnavailable, FeedBehind):
                await self.store.apply(moved)
            self.snapshot.apply(moved)
        return keys

    def _remember_touches(self, changes: Sequence[Change]) -> None:
        touches = [c for c in changes if isinstance(c, Touch)]
        if touches:
            self.snapshot.apply(touches)
            for t in touches:
                self._touches[t.key] = t

    async def backend_answered(self, key: AssociationKey, http_status: int) -> None:
        """The backend answered a request forwarded for ``key``: the first
        accepted answer verifies the row (and may establish its device's
        backend type, ending held polls of rows that thereby mix types)."""
        if not backend_accepts(http_status):
            return
        row = self.snapshot.get(key)
        if row is None or row.verified_at is not None:
            return  # the usual case: no write
        async with self._lock:
            for _ in range(BEHIND_RETRIES):
                changes = backend_accepted(self.snapshot, key, self.clock())

                def again(exc: FeedBehind) -> Sequence[Change] | None:
                    if self._take_missed(exc) is None:
                        return None
                    return backend_accepted(self.snapshot, key, self.clock())

                try:
                    await self._commit(changes, again)
                except FeedBehind as exc:
                    if await self._caught_up(exc, during="verification"):
                        continue
                    self.metrics.store_errors.inc()
                except Exception:
                    self.metrics.store_errors.inc()
                    log.exception("store_write_failed", during="verification")
                return

    async def expire_unverified(self) -> int:
        """Remove unverified rows not seen for the configured time; return how many."""
        if self._expiry <= 0 or not self.snapshot.unverified():
            return 0
        async with self._lock:
            changes = expire_unverified(self.snapshot, self.clock(), self._expiry)
            try:
                await self._commit(changes)
            except FeedBehind as exc:  # the next round decides on the caught-up state
                await self._caught_up(exc, during="expire_unverified")
                return 0
        expired = sum(1 for c in changes if isinstance(c, DeleteAssociation))
        if expired:
            log.info("unverified_expired", count=expired, max_age_seconds=self._expiry)
        return expired

    # -- admin ------------------------------------------------------------------

    @property
    def writer(self) -> asyncio.Lock:
        """The one lock every writer holds: build admin changes under it (against
        the current snapshot), then call ``apply_held``."""
        return self._lock

    async def apply(self, changes: Sequence[Change]) -> int:
        """Apply an admin change list (durably first); return held polls ended."""
        async with self._lock:
            return await self.apply_held(changes)

    async def apply_held(self, changes: Sequence[Change]) -> int:
        """``apply`` for a caller that already holds ``writer``."""
        assert self._lock.locked(), "apply_held needs the writer lock"
        before = self._ended
        changed = [False]

        def same(exc: FeedBehind) -> Sequence[Change] | None:
            # built on a state another node may have changed since: take the
            # missed rows; when they were only this node's own rows or last-seen
            # times the changes still hold (written as built), otherwise they
            # must be built again
            took = self._take_missed(exc)
            if took:
                changed[0] = True
            return changes if took is False else None

        for _ in range(BEHIND_RETRIES):
            try:
                await self._commit(changes, same)
            except FeedBehind as exc:
                if changed[0] or await self._absorb_missed(exc, during="admin") is not False:
                    raise StaleState() from None
                continue
            return self._ended - before
        raise StaleState()

    # -- changes from other nodes -------------------------------------------------

    def absorb(self, changes: Sequence[Change]) -> int:
        """Apply changes that are ALREADY durable (another node's, read from the
        shared store's change feed): the snapshot takes them, held polls they
        refuse end at once, and the decisions they move are refreshed in
        memory only (the node that wrote them records those). No store write.
        Caller holds ``writer``. Returns the held polls ended."""
        assert self._lock.locked(), "absorb needs the writer lock"
        if not changes:
            return 0
        before = self._ended
        # Last-seen times move no decision: a peer's batch of them costs no evaluation.
        keys = affected_keys([c for c in changes if type(c) is not Touch], self.snapshot)
        self.snapshot.apply(changes)
        self._revoke(keys)
        moved = refresh(keys, self.snapshot, self.snapshot.prefs, self.clock())
        if moved:
            self.snapshot.apply(moved)
        return self._ended - before

    def replace_snapshot(self, snapshot: Snapshot) -> int:
        """Take a freshly loaded state (a node too far behind the feed reloads);
        held polls it refuses end. Caller holds ``writer``. Returns polls ended."""
        assert self._lock.locked(), "replace_snapshot needs the writer lock"
        before = self._ended
        self.snapshot = snapshot
        self._revoke(set(self.longpolls.keys()))
        self.publish_counts()
        return self._ended - before

    def _revoke(self, keys: set[AssociationKey]) -> int:
        """End the held polls of associations in ``keys`` that are no longer allowed."""
        held = self.longpolls.keys()
        if not held or not keys:
            return 0
        ended = 0
        now = self.clock()
        for key in keys & set(held):
            decision = evaluate(key, self.snapshot, self.snapshot.prefs, now)
            if not isinstance(decision, Forward):
                ended += self.longpolls.revoke(key, decision)
        if ended:
            self.metrics.revocations.inc(ended)
            self._ended += ended
        return ended

    # -- last-seen batching and lifetime -------------------------------------------

    async def flush_touches(self) -> int:
        """Write the batched last-seen timestamps; return how many."""
        if not self._touches:
            return 0
        batch, self._touches = list(self._touches.values()), {}
        try:
            await self.store.apply(batch)
        except Exception as exc:
            if not isinstance(exc, StoreUnavailable):
                log.exception("store_write_failed", during="touch_flush")
            for t in batch:
                self._touches.setdefault(t.key, t)
            return 0
        return len(batch)

    async def _flush_loop(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            await self.flush_touches()
            try:
                await self.expire_unverified()
            except Exception:
                self.metrics.store_errors.inc()
                log.exception("store_write_failed", during="expire_unverified")
            self.publish_counts()

    def publish_counts(self) -> None:
        """Associations by list state (kept by the snapshot) and directory users
        by source, for the metrics gauges."""
        for state, n in self.snapshot.state_counts().items():
            self.metrics.associations.labels(state.value).set(n)
        sources = Counter(u.source for u in self.snapshot.users.values())
        for source in UserSource:
            self.metrics.directory_users.labels(source.value).set(sources[source])

    def start(self) -> None:
        """Start the periodic last-seen flush (none when ``touch_flush_seconds``
        is None: the test harness flushes on demand with ``flush_touches``)."""
        self.publish_counts()
        if self._flush_every is not None:
            self._flusher = create_task(
                self._flush_loop(self._flush_every), name="access:flush-touches"
            )

    async def close(self) -> None:
        """Stop the flush loop and write what is pending."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.flush_touches()


def _durable(changes: Sequence[Change]) -> list[Change]:
    return [c for c in changes if not isinstance(c, Touch)]
