"""The ``process_*`` metrics, without listing every file descriptor.

Approach. prometheus_client's ``ProcessCollector`` counts a process's open
file descriptors with ``len(os.listdir("/proc/<pid>/fd"))``: one directory
entry, one Python string per descriptor. A gateway holds two descriptors per
held Ping (the phone's and the backend's), so at 10,000 Pings per worker each
scrape listed 20,000 entries per worker: 22-24 ms of the event loop for each
(measured on this project's 2-core machine), every scrape, for every worker
the answering worker reports on: a stall that grows with the held Pings.
(A bench storm that failed and polled ``/metrics`` every 0.2 s for 120 s
spent 40 % of its profile there; in one that succeeds it is lost in the
noise.) Since Linux 6.2 a ``stat`` of
``/proc/<pid>/fd`` reports the number of open descriptors as its size (5 µs
at any count). ``ProcessStats`` uses it when the kernel does (checked once:
the size must match a listing of this process's own descriptors), and the
listing otherwise; everything else, names and help texts included, is what
``ProcessCollector`` exports, so dashboards and alerts are unchanged.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

__all__ = ["ProcessStats", "counts_fds_by_size"]


@functools.cache
def counts_fds_by_size(proc: str = "/proc") -> bool:
    """Whether ``stat(<proc>/self/fd).st_size`` is the number of open
    descriptors (procfs on Linux 6.2 and later; older kernels say 0, and any
    other directory its own size). The listing opens one descriptor of its own.
    Asked once per ``proc`` (the kernel does not change under a process)."""
    fd = os.path.join(proc, "self", "fd")
    try:
        size = os.stat(fd).st_size
        listed = len(os.listdir(fd))
    except OSError:
        return False
    return size > 0 and listed - 1 <= size <= listed


class ProcessStats(ProcessCollector):
    """``ProcessCollector``'s metrics of ``pid`` (this process by default);
    open descriptors counted by size where the kernel can (module comment)."""

    def __init__(
        self,
        *,
        pid: Callable[[], int | str] = lambda: "self",
        proc: str = "/proc",
        registry: CollectorRegistry | None = None,
        by_size: bool | None = None,
    ) -> None:
        super().__init__(pid=pid, proc=proc, registry=None)
        self._by_size = counts_fds_by_size(proc) if by_size is None else by_size
        if registry is not None:
            registry.register(self)

    def open_fds(self, pid_dir: str) -> int:
        fd = os.path.join(pid_dir, "fd")
        if self._by_size:
            return os.stat(fd).st_size
        return len(os.listdir(fd))

    def collect(self) -> Iterable[Metric]:
        if not self._btime:
            return []
        pid_dir = os.path.join(self._proc, str(self._pid()).strip())
        p = self._prefix
        result: list[Metric] = []
        try:
            with open(os.path.join(pid_dir, "stat"), "rb") as stat:
                parts = stat.read().split(b")")[-1].split()
            result += [
                GaugeMetricFamily(
                    p + "virtual_memory_bytes",
                    "Virtual memory size in bytes.",
                    value=float(parts[20]),
                ),
                GaugeMetricFamily(
                    p + "resident_memory_bytes",
                    "Resident memory size in bytes.",
                    value=float(parts[21]) * self._pagesize,
                ),
                GaugeMetricFamily(
                    p + "start_time_seconds",
                    "Start time of the process since unix epoch in seconds.",
                    value=float(parts[19]) / self._ticks + self._btime,
                ),
                CounterMetricFamily(
                    p + "cpu_seconds_total",
                    "Total user and system CPU time spent in seconds.",
                    value=float(parts[11]) / self._ticks + float(parts[12]) / self._ticks,
                ),
            ]
        except (OSError, IndexError, ValueError):
            pass
        try:
            with open(os.path.join(pid_dir, "limits"), "rb") as limits:
                max_fds = next(
                    float(line.split()[3]) for line in limits if line.startswith(b"Max open file")
                )
            result += [
                GaugeMetricFamily(
                    p + "open_fds", "Number of open file descriptors.", self.open_fds(pid_dir)
                ),
                GaugeMetricFamily(
                    p + "max_fds", "Maximum number of open file descriptors.", value=max_fds
                ),
            ]
        except (OSError, StopIteration, IndexError, ValueError):
            pass
        return result
