"""The directory sync service: scheduled and on-demand LDAP syncs, off the event loop.

Approach. ``DirectorySync.sync()`` is one sync, run by the schedule (every
``sync_interval_seconds``, the first right after start; after a failure the
next try comes after ``retry_seconds``) or on demand (the admin API and
``sentry admin directory sync``). One at a time (a lock): a sync asked for
while another runs waits and then runs afresh.

1. Read: ``ldap.fetch`` (connect, bind, paged search) and the attribute
   mapping (``policy.dirmap``) run in a worker thread: ldap3 is synchronous
   and a directory of 10,000 users must not stall the event loop.
2. Plan and apply: ``policy.dirsync.plan_sync`` against the live snapshot
   and the resulting ONE change list go through the admin commit path
   (``AdminContext.commit_in_thread``: under the writer lock the plan runs in
   the worker thread too, then one store transaction, the snapshot, and live
   revocation: a held Ping of a mailbox that a custom attribute no longer
   pushes ends at once). Push problems the
   changes introduce are flagged (``push_problems`` warning and the report),
   never refused: the directory's data wins, as for a user written through
   the API.
3. Report: ``SyncReport`` (added, changed, removed, errors, timings) is
   returned, summarised in the sync's one audit entry, and kept as
   ``status().last_report``.

A sync that fails (``DirectoryError``: unreachable, TLS, bind, search; a
refused mass removal; a store that cannot keep changes) changes nothing: the
gateway keeps deciding from the last sync. It says so in the metrics
(``sentry_directory_up`` 0, ``sentry_directory_sync_errors_total{kind}``,
``sentry_directory_last_success_timestamp_seconds``), in ``status()`` (the
API and ``/readyz``'s notes) and with one log event per change of state
(``directory_sync_failed`` when a new kind of failure starts,
``directory_recovered`` when a sync succeeds again). The bind password is
read from its file by the worker at every sync and never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from sentry.aio import cancel_wait, create_task
from sentry.model import Realms, UserSource
from sentry.observability import Metrics
from sentry.policy import Change, ConflictError, Snapshot, new_push_problems
from sentry.policy.dirmap import Mapped, map_entry
from sentry.policy.dirsync import RemovalLimitError, SyncOutcome, plan_sync
from sentry.settings_directory import LdapSettings
from sentry.store.base import StoreUnavailable

from .ldap import DirectoryError, Fetched, fetch

__all__ = ["Commit", "DirectoryStatus", "DirectorySync", "SyncReport"]

log = structlog.get_logger("sentry.directory")

Commit = Callable[[Callable[[Snapshot, float], Sequence[Change]], Executor], Awaitable[int]]
"""``AdminContext.commit_in_thread``: under the writer lock, build a change list
in the executor's thread, then apply it (the admin commit path)."""
SCHEDULE_ACTOR = "directory"
ERRORS_LISTED = 100


@dataclass(frozen=True)
class SyncReport:
    """One successful sync: what it changed, what it could not use, how long."""

    actor: str
    started_at: float
    server: str
    pages: int
    outcome: SyncOutcome
    push_problems: tuple[dict[str, Any], ...]
    polls_ended: int
    read_seconds: float
    apply_seconds: float
    duration_seconds: float

    def view(self) -> dict[str, Any]:
        """JSON-ready (the API's answer; the CLI prints it)."""
        o = self.outcome
        return {
            **o.summary(),
            "actor": self.actor,
            "started_at": self.started_at,
            "server": self.server,
            "pages": self.pages,
            "returned": list(o.returned),
            "blocked": [{"device_id": k.device_id, "user": k.user} for k in o.blocked],
            "errors": [e.view() for e in o.errors[:ERRORS_LISTED]],
            "warnings": [w.view() for w in o.warnings[:ERRORS_LISTED]],
            "push_problems": list(self.push_problems),
            "polls_ended": self.polls_ended,
            "read_seconds": round(self.read_seconds, 3),
            "apply_seconds": round(self.apply_seconds, 3),
            "duration_seconds": round(self.duration_seconds, 3),
        }


@dataclass
class DirectoryStatus:
    """Where the sync stands (the API's ``GET /api/directory``, ``/readyz`` notes)."""

    last_attempt_at: float | None = None
    last_success_at: float | None = None
    failing_since: float | None = None
    last_error: DirectoryError | None = None
    last_report: SyncReport | None = None
    next_sync_at: float | None = None
    running: bool = False
    attempts: int = 0
    successes: int = 0
    errors: dict[str, int] = field(default_factory=dict)


class DirectorySync:
    """Scheduled and on-demand syncs of one LDAP directory (module comment)."""

    def __init__(
        self,
        settings: LdapSettings,
        *,
        commit: Commit,
        snapshot: Callable[[], Snapshot],
        metrics: Metrics,
        root: Path = Path("."),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._commit, self._snapshot, self._metrics = commit, snapshot, metrics
        self._root, self._clock = root, clock
        self._lock = asyncio.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ldap-sync")
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()
        self.status = DirectoryStatus()

    # --- one sync ---

    async def sync(
        self, *, actor: str = SCHEDULE_ACTOR, note: str = "", allow_mass_removal: bool = False
    ) -> SyncReport:
        """Read the directory and apply it; ``DirectoryError`` when nothing changed."""
        async with self._lock:
            self.status.running = True
            try:
                report = await self._sync(actor, note, allow_mass_removal)
            except DirectoryError as exc:
                self._failed(exc)
                raise
            else:
                self._succeeded(report)
                return report
            finally:
                self.status.running = False
                self.status.attempts += 1
                async with self._changed:
                    self._changed.notify_all()

    async def _sync(self, actor: str, note: str, allow_mass_removal: bool) -> SyncReport:
        started, t0 = self._clock(), time.monotonic()
        realms = self._snapshot().realms
        loop = asyncio.get_running_loop()
        fetched, mapped = await loop.run_in_executor(self._executor, self._read, realms)
        t1 = time.monotonic()
        holder: list[SyncOutcome] = []
        flagged: list[dict[str, Any]] = []

        def build(snap: Snapshot, now: float) -> Sequence[Change]:
            with _few_full_collections():  # (in the worker thread, as the read)
                return plan(snap, now)

        def plan(snap: Snapshot, now: float) -> Sequence[Change]:
            outcome = plan_sync(
                snap,
                mapped,
                removed=self.settings.removed_users,
                max_removed_percent=self.settings.max_removed_percent,
                allow_mass_removal=allow_mass_removal,
                actor=actor,
                note=note or "directory sync",
                now=now,
            )
            holder.append(outcome)
            flagged[:] = [p.view() for p in new_push_problems(snap, outcome.changes)]
            return outcome.changes

        try:
            ended = await self._commit(build, self._executor)
        except RemovalLimitError as exc:
            raise DirectoryError("removal_limit", exc.message) from None
        except ConflictError as exc:  # pragma: no cover - the plan avoids conflicts
            raise DirectoryError("store", exc.message) from None
        except StoreUnavailable as exc:
            raise DirectoryError("store", f"the state store cannot keep changes: {exc}") from None
        if flagged:
            log.warning("push_problems", action="directory_sync", problems=flagged)
        t2 = time.monotonic()
        return SyncReport(
            actor, started, fetched.server, fetched.pages, holder[-1], tuple(flagged),
            ended, t1 - t0, t2 - t1, t2 - t0,
        )  # fmt: skip

    def _read(self, realms: Realms) -> tuple[Fetched[Mapped], list[Mapped]]:
        """In the worker thread: the search, each entry mapped as its page comes."""
        attrs = self.settings.attributes
        with _few_full_collections():
            fetched = fetch(self.settings, self._root, lambda e: map_entry(e, attrs, realms))
            return fetched, sorted(fetched.entries, key=lambda m: m.dn)

    # --- state, metrics, logs ---

    def _failed(self, exc: DirectoryError) -> None:
        s, now = self.status, self._clock()
        previous = s.last_error
        s.last_attempt_at, s.last_error = now, exc
        s.failing_since = s.failing_since or now
        s.errors[exc.kind] = s.errors.get(exc.kind, 0) + 1
        self._metrics.directory_sync_errors.labels(exc.kind).inc()
        self._metrics.directory_syncs.labels("error").inc()
        self._metrics.directory_up.set(0)
        if previous is None or previous.kind != exc.kind:
            log.warning(
                "directory_sync_failed",
                kind=exc.kind,
                error=exc.message,
                last_success=s.last_success_at,
                kept="the users of the last successful sync",
            )

    def _succeeded(self, report: SyncReport) -> None:
        s, now = self.status, self._clock()
        if s.last_error is not None:
            log.info("directory_recovered", failing_since=s.failing_since, kind=s.last_error.kind)
        s.last_attempt_at = s.last_success_at = now
        s.failing_since, s.last_error, s.last_report = None, None, report
        s.successes += 1
        m = self._metrics
        m.directory_last_success.set(now)
        m.directory_up.set(1)
        m.directory_syncs.labels("ok").inc()
        m.directory_sync_duration.set(report.duration_seconds)
        m.directory_missing_users.set(report.outcome.missing)
        self._publish_users()
        counts = report.outcome.summary()["counts"]
        log.info(
            "directory_synced",
            server=report.server,
            entries=report.outcome.entries,
            duration_ms=round(report.duration_seconds * 1000),
            actor=report.actor,
            **counts,
        )

    def _publish_users(self) -> None:
        users = self._snapshot().users.values()
        for source in UserSource:
            n = sum(1 for u in users if u.source is source)
            self._metrics.directory_users.labels(source.value).set(n)

    def notes(self) -> list[str]:
        """What ``/readyz`` says about the directory (it never makes the gateway
        not ready: requests are decided from the last sync)."""
        s = self.status
        if s.last_error is None:
            return []
        since = _iso(s.failing_since)
        kept = f"the sync of {_iso(s.last_success_at)}" if s.last_success_at else "no sync yet"
        return [
            f"directory ldap failing since {since} ({s.last_error.kind}: "
            f"{s.last_error.message}); deciding from {kept}"
        ]

    async def wait_attempts(self, count: int, timeout: float = 30.0) -> None:
        """Until ``count`` syncs have been attempted (tests; bounded by ``timeout``)."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.status.attempts >= count)

    # --- the schedule ---

    def start(self) -> None:
        """Start the schedule (a first sync now) unless the interval is 0."""
        self._publish_users()
        if self.settings.sync_interval_seconds > 0:
            self._task = create_task(self._loop(), name="directory:sync")

    async def _loop(self) -> None:
        delay = 0.0
        while True:
            self.status.next_sync_at = self._clock() + delay
            await asyncio.sleep(delay)
            try:
                await self.sync()
                delay = self.settings.sync_interval_seconds
            except DirectoryError:
                delay = min(self.settings.sync_interval_seconds, self.settings.retry_seconds)
            except Exception:  # a bug must not end the schedule
                log.exception("directory_sync_crashed")
                delay = self.settings.retry_seconds

    async def close(self) -> None:
        """Stop the schedule (a read in progress ends by its own timeout)."""
        await cancel_wait(self._task)
        self._executor.shutdown(wait=False, cancel_futures=True)


@contextlib.contextmanager
def _few_full_collections() -> Iterator[None]:
    """While the worker thread reads or plans: no full (oldest generation) collection.

    Reading 10,000 entries keeps many objects alive for a few seconds; every
    full collection the allocations trigger walks them all while holding the
    GIL, which stops the event loop (measured: 100-170 ms each, two or three
    per sync). The youngest generations still run; the oldest is due again
    when the read is over, when what it walks is only what stays (the users).
    The gateway's state loaded at start is frozen (``store.sqlite``), so this
    is the collector's whole work on a sync."""
    first, second, third = gc.get_threshold()
    gc.set_threshold(first, second, max(third, 1_000_000))
    try:
        yield
    finally:
        gc.set_threshold(first, second, third)


def _iso(ts: float | None) -> str:
    if ts is None:
        return "never"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
