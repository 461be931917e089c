"""The worker side of ``gateway.workers``: what a worker process gets from its supervisor.

Approach. The supervisor (``sentry.supervisor``) starts each worker as
``sentry run --config FILE`` with one environment variable, ``SENTRY_WORKER``,
holding a ``WorkerSpec`` as JSON: the worker's index (1..N), the descriptor
numbers of its two inherited listening sockets (device and admin), of the
pipe on which it says it is ready and of its *lifeline* (a pipe whose write
end only the supervisor holds: end of file means the supervisor is gone, and
the worker drains and exits instead of serving on as an orphan), and the
run directory. ``sentry.app.run`` serves the inherited sockets instead of
binding its own, adds ``worker`` to every log line and to ``/healthz`` and
``/readyz``, and answers ``/metrics`` from ``scrape_registry``.

Metrics. Every worker runs prometheus_client in multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR`` is set by the supervisor to a directory of the
run, emptied by it at every start): each process writes its samples to
memory-mapped files there and any worker's ``/metrics`` reads them all, so a
scrape through the shared admin port sees the whole node whichever worker
answers. Counters and histograms add up over workers (a restarted worker's
counts stay); every gauge declares how workers combine (``livesum`` for
in-flight requests, held polls and connections; ``livemin`` for "up"
gauges; ``livemax`` for the rest, see ``sentry.observability.metrics``).
Per-process facts cannot be added up, so ``WorkersCollector`` reports
prometheus_client's process metrics (``process_open_fds``,
``process_resident_memory_bytes``, ...) once per live worker with a
``worker`` label, plus ``sentry_workers`` (configured),
``sentry_worker_up`` and ``sentry_worker_restarts_total`` per worker, from
the status file the supervisor rewrites on every change (``workers.json``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from sentry.observability.process import ProcessStats, counts_fds_by_size
from sentry.tlstickets import KEY_BYTES

__all__ = [
    "ENV",
    "METRICS_DIR",
    "STATUS_FILE",
    "WorkerSpec",
    "WorkersCollector",
    "close_quietly",
    "read_status",
    "scrape_registry",
    "write_status",
]

ENV = "SENTRY_WORKER"
METRICS_DIR = "metrics"  # under the run directory: PROMETHEUS_MULTIPROC_DIR
STATUS_FILE = "workers.json"  # under the run directory: written by the supervisor


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker inherits from its supervisor (see the module comment)."""

    index: int  # 1..count
    count: int
    device_fd: int
    admin_fd: int
    ready_fd: int
    lifeline_fd: int
    run_dir: str
    ticket_keys_fd: int = -1  # a pipe holding the node's TLS ticket keys (sentry.tlstickets)

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> WorkerSpec | None:
        """The spec this process was started with (removed from the environment,
        so nothing this worker starts inherits it), or None outside a worker."""
        env = os.environ if environ is None else environ
        raw = env.pop(ENV, None)
        if raw is None:
            return None
        spec = cls(**json.loads(raw))
        _ = spec.ticket_keys  # read now: the pipe is closed before anything else starts
        return spec

    def socket(self, key: str) -> socket.socket:
        """The inherited listener of ``key`` (``gateway.listen``, ``admin.listen``);
        the returned object owns the descriptor: ask once per key."""
        fd = {"gateway.listen": self.device_fd, "admin.listen": self.admin_fd}[key]
        return socket.socket(fileno=fd)

    def announce_ready(self) -> None:
        """Tell the supervisor this worker serves (once; closes the pipe)."""
        try:
            os.write(self.ready_fd, b"ready\n")
        finally:
            os.close(self.ready_fd)

    def watch_lifeline(self, on_gone: Callable[[], None]) -> None:
        """Call ``on_gone`` once when the supervisor's end of the lifeline closes."""
        loop = asyncio.get_running_loop()
        fd = self.lifeline_fd

        def readable() -> None:
            try:
                data = os.read(fd, 64)
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(fd)
                on_gone()

        loop.add_reader(fd, readable)

    @functools.cached_property
    def ticket_keys(self) -> bytes | None:
        """The node's TLS session ticket keys, read once from the inherited
        pipe (then closed); None without a pipe or a whole key."""
        fd = self.ticket_keys_fd
        if fd < 0:
            return None
        data = b""
        try:
            while len(data) < KEY_BYTES:
                chunk = os.read(fd, KEY_BYTES - len(data))
                if not chunk:
                    break
                data += chunk
        except OSError:
            return None
        finally:
            close_quietly(fd)
        return data if len(data) == KEY_BYTES else None

    @property
    def identity(self) -> dict[str, Any]:
        """What ``/healthz`` and ``/readyz`` add: which process answered."""
        return {"worker": self.index, "pid": os.getpid()}


def write_status(run_dir: Path, status: dict[str, Any]) -> None:
    """Replace the status file atomically (the supervisor's view of its workers)."""
    tmp = run_dir / f".{STATUS_FILE}.tmp"
    tmp.write_text(json.dumps(status), encoding="utf-8")
    os.replace(tmp, run_dir / STATUS_FILE)


def read_status(run_dir: Path) -> dict[str, Any]:
    """The last status the supervisor wrote ({} before the first)."""
    try:
        data = json.loads((run_dir / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class WorkersCollector(Collector):
    """Per-worker facts for ``/metrics`` (module comment)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._by_size = counts_fds_by_size()

    def collect(self) -> Iterator[Metric]:
        status = read_status(self.run_dir)
        workers = status.get("workers", [])
        configured = GaugeMetricFamily(
            "sentry_workers", "Worker processes configured (gateway.workers)"
        )
        configured.add_metric([], float(status.get("count", len(workers))))
        yield configured
        up = GaugeMetricFamily(
            "sentry_worker_up",
            "1 while the worker serves, 0 while it is restarted",
            labels=["worker"],
        )
        restarts = CounterMetricFamily(
            "sentry_worker_restarts",
            "Times the supervisor restarted a worker that exited",
            labels=["worker"],
        )
        for w in workers:
            label = [str(w["index"])]
            up.add_metric(label, 1.0 if w.get("ready") else 0.0)
            restarts.add_metric(label, float(w.get("restarts", 0)))
        yield up
        yield restarts
        yield from self._process_metrics(workers)

    def _process_metrics(self, workers: list[dict[str, Any]]) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for w in workers:
            pid = w.get("pid")
            if not pid or not w.get("ready"):
                continue
            collector = ProcessStats(pid=_constant(pid), by_size=self._by_size)
            for family in collector.collect():
                out = merged.get(family.name)
                if out is None:
                    out = merged[family.name] = Metric(
                        family.name, family.documentation, family.type, family.unit
                    )
                for sample in family.samples:
                    labels = {**sample.labels, "worker": str(w["index"])}
                    out.add_sample(sample.name, labels, sample.value, sample.timestamp)
        yield from merged.values()


def _constant(value: int) -> Callable[[], int]:
    return lambda: value


def scrape_registry(run_dir: Path) -> CollectorRegistry:
    """What a worker's ``/metrics`` answers: every worker's samples, combined."""
    registry = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(registry, path=str(run_dir / METRICS_DIR))  # type: ignore[no-untyped-call]
    registry.register(WorkersCollector(run_dir))
    return registry


def close_quietly(fd: int | None) -> None:
    """Close ``fd`` if open (a pipe end the supervisor no longer needs)."""
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)
