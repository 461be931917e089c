"""Every Prometheus metric of the gateway, owned by one injected ``Metrics`` object.

Labels are bounded by construction: command names come from the EAS command
enum (anything else is counted as "unknown"), decisions and reasons from the
policy's enums, store faults from ``StoreFault``, pools and servers from the
configuration. Never a DeviceId or
a user. Tests build ``Metrics(CollectorRegistry())`` for a fresh registry.

Besides the gateway's own metrics the registry carries ``sentry_build_info``
(always 1, the version in its labels) and the process metrics of
prometheus_client's process collector (``process_resident_memory_bytes``,
``process_open_fds``, ``process_max_fds``, ``process_cpu_seconds_total``,
...: file descriptors are what held Pings consume), from ``ProcessStats``,
which counts the descriptors without listing them (``process.py``).

Under ``gateway.workers`` every process writes its samples for prometheus_client's
multiprocess mode (``sentry.worker``): each gauge says how workers combine
(``multiprocess_mode``: ``livesum`` for what adds up over processes, ``livemin``
for "up"/"healthy", ``livemax`` for the rest); outside that mode it is ignored.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sentry.buildinfo import python_version, version
from sentry.eas.request import Command
from sentry.model import UserSource
from sentry.observability.process import ProcessStats
from sentry.policy.dirsync import SYNC_ERROR_KINDS
from sentry.store.base import StoreFault

if TYPE_CHECKING:
    from sentry.policy.snapshot import Snapshot

__all__ = ["CATCHUP_TRIGGERS", "KNOWN_COMMANDS", "Metrics", "command_label", "status_class"]

CATCHUP_TRIGGERS = ("notify", "resumed", "poll", "write")
"""What made a node read the change feed (``sentry_cluster_catchups_total``)."""

KNOWN_COMMANDS = frozenset(c.value for c in Command) | {"OPTIONS"}
_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
    900,
    1800,
    3600,
)


class _AnswerValues(NamedTuple):
    """What one answered request moves: ``count.inc(1)``, ``total.inc(elapsed)``,
    ``buckets[bisect_left(bounds, elapsed)].inc(1)``."""

    count: Any
    total: Any
    buckets: Sequence[Any]
    bounds: Sequence[float]


class _Calls:
    """A value whose ``inc(amount)`` calls a metric's public method."""

    __slots__ = ("inc",)

    def __init__(self, method: Any) -> None:
        self.inc = method


class _Nothing:
    __slots__ = ()

    def inc(self, amount: float) -> None:
        pass


def _answer_values(counter: Any, histogram: Any) -> _AnswerValues:
    """The values of a ``sentry_requests`` child and a
    ``sentry_request_duration_seconds`` child, moved directly.

    Why. ``Counter.inc`` and ``Histogram.observe`` check their arguments and
    the metric's state, and ``observe`` walks the bounds one by one in
    Python, before each updates its values: a third of what a request's
    metrics cost (``bench/bench_metrics.py``: 2.31 against 1.53 µs). The values are the ones
    prometheus_client keeps for the child (``MutexValue``, or under workers
    ``mpvalues.FastMmapedValue``), under its own lock, so what a scrape reads
    is what ``inc`` and ``observe`` would have written (buckets are kept
    per bucket and summed at collection; ``bisect_left`` finds the first
    bound ``elapsed`` is at most, as ``observe``'s walk does). Should a
    prometheus_client keep its values otherwise (no ``_value``, ``_sum``,
    ``_buckets``, ``_upper_bounds`` as they are now), the public methods are
    called instead."""
    try:
        value, total = counter._value, histogram._sum
        buckets, bounds = list(histogram._buckets), [float(b) for b in histogram._upper_bounds]
    except (AttributeError, TypeError, ValueError):
        return _public(counter, histogram)
    usable = (
        bounds
        and bounds == sorted(bounds)
        and bounds[-1] == math.inf
        and len(buckets) == len(bounds)
        and all(callable(getattr(v, "inc", None)) for v in (value, total, *buckets))
    )
    if not usable:
        return _public(counter, histogram)
    return _AnswerValues(value, total, buckets, bounds)


def _public(counter: Any, histogram: Any) -> _AnswerValues:
    return _AnswerValues(_Calls(counter.inc), _Calls(histogram.observe), (_Nothing(),), (math.inf,))


def _gauge_value(gauge: Gauge) -> Any:
    """The gauge's value, moved directly as ``_answer_values`` moves the
    request's (its ``inc`` otherwise)."""
    value = getattr(gauge, "_value", None)
    return value if callable(getattr(value, "inc", None)) else _Calls(gauge.inc)


def command_label(command: str | None) -> str:
    """The bounded label for a command name."""
    return command if command in KNOWN_COMMANDS else "unknown"


def status_class(status: int) -> str:
    """``2xx``, ``4xx`` ... for an HTTP status."""
    return f"{status // 100}xx"


class Metrics:
    """The gateway's metrics, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        # (command, decision, status // 100) -> the children answered() moves
        self._answered: dict[tuple[str, str, int], _AnswerValues] = {}
        self.requests = Counter(
            "sentry_requests",
            "EAS requests answered, by command, decision and HTTP status class",
            ["command", "decision", "status_class"],
            registry=registry,
        )
        self.latency = Histogram(
            "sentry_request_duration_seconds",
            "Time to answer a request, by command",
            ["command"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.refusals = Counter(
            "sentry_refusals",
            "Refused requests by reason (a request may count several reasons)",
            ["reason"],
            registry=registry,
        )
        self.bad_requests = Counter(
            "sentry_bad_requests",
            "Requests rejected as malformed, by error kind",
            ["kind"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "sentry_requests_in_flight",
            "Requests being processed",
            multiprocess_mode="livesum",
            registry=registry,
        )
        # what a request moves: inc(1) as it starts, inc(-1) as it ends (_gauge_value)
        self.in_flight_value = _gauge_value(self.in_flight)
        self.held_long_polls = Gauge(
            "sentry_held_long_polls",
            "Ping and long-poll Sync requests held open upstream",
            ["command"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.revocations = Counter(
            "sentry_revoked_long_polls",
            "Held long polls ended because access was revoked",
            registry=registry,
        )
        self.revocation_latency = Histogram(
            "sentry_revocation_seconds",
            "Time from a state change to a held poll's answer",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=registry,
        )
        self.client_disconnects = Counter(
            "sentry_client_disconnects",
            "Requests whose device closed the connection before the answer was complete"
            " (the backend request, if any, is cancelled), by command",
            ["command"],
            registry=registry,
        )
        self.upstream_errors = Counter(
            "sentry_upstream_errors",
            "Errors talking to backend servers, by pool and kind",
            ["pool", "kind"],
            registry=registry,
        )
        self.server_up = Gauge(
            "sentry_backend_server_up",
            "1 when a backend server is considered healthy",
            ["pool", "server"],
            multiprocess_mode="livemin",
            registry=registry,
        )
        self.pool_healthy = Gauge(
            "sentry_backend_pool_healthy_servers",
            "Healthy servers per pool",
            ["pool"],
            multiprocess_mode="livemin",
            registry=registry,
        )
        self.check_failures = Counter(
            "sentry_backend_check_failures",
            "Failed active health checks of backend servers, by pool and reason",
            ["pool", "reason"],
            registry=registry,
        )
        self.marked_down = Counter(
            "sentry_backend_marked_down",
            "Backend servers marked down (active check or failed connection), by pool and reason",
            ["pool", "reason"],
            registry=registry,
        )
        self.associations = Gauge(
            "sentry_associations",
            "ActiveSync associations by list state "
            "(allowed, blocked, quarantined, wipe_pending, wiped)",
            ["state"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.store_errors = Counter(
            "sentry_store_errors",
            "State store operations that failed and problems its checks found, by fault",
            ["kind"],
            registry=registry,
        )
        self.log_writes_lost = Counter(
            "sentry_log_writes_lost",
            "Writes of log lines the log output refused (its reader gone, a full disk): "
            "their lines are lost",
            registry=registry,
        )
        self.store_healthy = Gauge(
            "sentry_store_healthy",
            "1 while the state store keeps changes durably; 0 while it is degraded",
            multiprocess_mode="livemin",
            registry=registry,
        )
        self.store_fault = Gauge(
            "sentry_store_fault",
            "1 for the state store's current fault (all 0 while healthy)",
            ["kind"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.store_healthy.set(1)
        for fault in StoreFault:
            self.store_errors.labels(fault.value)
            self.store_fault.labels(fault.value).set(0)
        self.auth_refusals = Counter(
            "sentry_auth_refusals",
            "Requests the identity step refused, by scheme and reason (never forwarded)",
            ["scheme", "reason"],
            registry=registry,
        )
        self.jwks_refreshes = Counter(
            "sentry_jwks_refreshes",
            "Loads of the OAuth signing keys, by result (ok, error, rate_limited)",
            ["result"],
            registry=registry,
        )
        self.jwks_keys = Gauge(
            "sentry_jwks_keys",
            "OAuth signing keys currently loaded",
            multiprocess_mode="livemin",
            registry=registry,
        )
        self.redirects = Counter(
            "sentry_redirects",
            "Backend 451 redirects by the pool routed to and outcome",
            ["pool", "outcome"],
            registry=registry,
        )
        self.redirect_cache_entries = Gauge(
            "sentry_redirect_cache_entries",
            "Mailboxes with a cached redirect target",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.build_info = Gauge(
            "sentry_build_info",
            "Always 1: the gateway's version and Python in the labels",
            ["version", "python"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.build_info.labels(version(), python_version()).set(1)
        ProcessStats(registry=registry)
        self._connection_metrics(registry)
        self.cluster_lag = Gauge(
            "sentry_cluster_lag_seconds",
            "How far this node's view of the shared state is behind, per peer (the "
            "PostgreSQL scale-out sets it; a single node has no sample)",
            ["peer"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self._cluster_metrics(registry)
        self._directory_metrics(registry)

    def _cluster_metrics(self, registry: CollectorRegistry) -> None:
        """Convergence between nodes on a shared store (``sentry.cluster``);
        ``trigger`` is one of ``CATCHUP_TRIGGERS``."""
        self.cluster_notifications = Counter(
            "sentry_cluster_notifications_total",
            "Change notifications (NOTIFY) received from other nodes",
            registry=registry,
        )
        self.cluster_applied = Counter(
            "sentry_cluster_changes_applied_total",
            "Change-feed rows of other nodes applied to this node's state",
            registry=registry,
        )
        self.cluster_catchups = Counter(
            "sentry_cluster_catchups_total",
            "Reads of the change feed that applied missed rows, by what started them "
            "(notify, resumed: after a (re)connection, poll: the periodic safety net, "
            "write: a write found this node behind)",
            ["trigger"],
            registry=registry,
        )
        for trigger in CATCHUP_TRIGGERS:
            self.cluster_catchups.labels(trigger)
        self.cluster_reloads = Counter(
            "sentry_cluster_reloads_total",
            "Full reloads of the state (the feed rows this node missed were pruned)",
            registry=registry,
        )
        self.cluster_listening = Gauge(
            "sentry_cluster_listening",
            "1 while this node listens to the change feed (a shared store only)",
            registry=registry,
        )

    def _directory_metrics(self, registry: CollectorRegistry) -> None:
        """Directory users and the LDAP sync (``sentry.directory``); ``kind`` is
        one of ``SYNC_ERROR_KINDS``, ``source`` a ``UserSource``."""
        self.directory_users = Gauge(
            "sentry_directory_users",
            "Directory users by source",
            ["source"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.directory_missing_users = Gauge(
            "sentry_directory_missing_users",
            "LDAP users the last sync no longer found (kept or flagged by the removal action)",
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.directory_last_success = Gauge(
            "sentry_directory_last_success_timestamp_seconds",
            "When the last directory sync succeeded (Unix time; 0: never)",
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.directory_up = Gauge(
            "sentry_directory_up",
            "1 when the last directory sync reached the directory and applied, 0 when it failed",
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.directory_sync_errors = Counter(
            "sentry_directory_sync_errors",
            "Failed directory syncs by kind (nothing was applied; the last sync stays)",
            ["kind"],
            registry=registry,
        )
        self.directory_syncs = Counter(
            "sentry_directory_syncs", "Directory syncs by result (ok, error)", ["result"],
            registry=registry,
        )  # fmt: skip
        self.directory_sync_duration = Gauge(
            "sentry_directory_sync_duration_seconds",
            "Duration of the last successful directory sync (read, plan and apply)",
            multiprocess_mode="livemax",
            registry=registry,
        )
        for source in UserSource:
            self.directory_users.labels(source.value).set(0)
        for kind in SYNC_ERROR_KINDS:
            self.directory_sync_errors.labels(kind)

    def _connection_metrics(self, registry: CollectorRegistry) -> None:
        """Listener connections (``proxy/connections.py``); ``listener`` is
        ``devices`` or ``admin``."""
        self.connections_open = Gauge(
            "sentry_connections_open",
            "Open connections",
            ["listener"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.connections_max = Gauge(
            "sentry_connections_max",
            "The connection cap in force (from the configuration and RLIMIT_NOFILE)",
            ["listener"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.connections_refused = Counter(
            "sentry_connections_refused",
            "Connections refused at accept because the listener was at its cap",
            ["listener"],
            registry=registry,
        )
        self.connection_timeouts = Counter(
            "sentry_connection_timeouts",
            "Connections closed by a client-side timeout, by phase (head, idle, body, send)",
            ["listener", "phase"],
            registry=registry,
        )
        self.heap_trims = Counter(
            "sentry_heap_trims",
            "malloc_trim calls after a burst of new device connections (sentry/heaptrim.py)",
            registry=registry,
        )
        self.heap_trim_released = Counter(
            "sentry_heap_trim_released_bytes",
            "Resident memory the heap trims gave back",
            registry=registry,
        )

    def answered(self, command: str, decision: str, status: int, elapsed: float) -> None:
        """One request answered: ``sentry_requests_total`` and its duration.
        What a request moves is kept per label set (the labels are bounded: a
        known command or ``unknown``, the gateway's own decisions, five status
        classes), so a request skips ``labels()`` and its lock, and the
        values are moved directly (``_answer_values``)."""
        key = (command, decision, status // 100)
        values = self._answered.get(key)
        if values is None:
            values = self._answered[key] = _answer_values(
                self.requests.labels(command, decision, status_class(status)),
                self.latency.labels(command),
            )
        count, total, buckets, bounds = values
        count.inc(1)
        total.inc(elapsed)
        buckets[bisect_left(bounds, elapsed)].inc(1)

    def publish_state(self, snapshot: Snapshot) -> None:
        """Associations by list state (kept by the snapshot) and directory users
        by source, for the gauges (``sentry.housekeeping`` calls it)."""
        for state, n in snapshot.state_counts().items():
            self.associations.labels(state.value).set(n)
        sources = Tally(u.source for u in snapshot.users.values())
        for source in UserSource:
            self.directory_users.labels(source.value).set(sources[source])
