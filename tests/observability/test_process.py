"""``ProcessStats``: prometheus_client's process metrics, the open descriptors
counted by size where the kernel reports them so (Linux 6.2+), by listing
elsewhere; the same names, types, help texts and values."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.metrics_core import Metric

from sentry.observability.process import ProcessStats, counts_fds_by_size


def _by_name(metrics: Iterator[Metric] | list[Metric]) -> dict[str, Metric]:
    return {m.name: m for m in metrics}


def _value(m: Metric) -> float:
    return float(m.samples[0].value)


@pytest.mark.parametrize("by_size", [True, False])
def test_the_same_metrics_as_prometheus_clients_collector(by_size: bool) -> None:
    if by_size and not counts_fds_by_size():
        pytest.skip("this kernel does not report /proc/<pid>/fd's size (Linux < 6.2)")
    ours = _by_name(ProcessStats(by_size=by_size).collect())
    theirs = _by_name(ProcessCollector(registry=None).collect())  # type: ignore[no-untyped-call]
    assert ours.keys() == theirs.keys() == {
        "process_virtual_memory_bytes", "process_resident_memory_bytes",
        "process_start_time_seconds", "process_cpu_seconds", "process_open_fds",
        "process_max_fds",
    }  # fmt: skip
    for name, m in ours.items():
        assert (m.type, m.documentation) == (theirs[name].type, theirs[name].documentation)
    for name in ("process_start_time_seconds", "process_max_fds"):
        assert _value(ours[name]) == _value(theirs[name])
    # the listing opens one descriptor of its own while it counts
    assert abs(_value(ours["process_open_fds"]) - _value(theirs["process_open_fds"])) <= 1
    assert _value(ours["process_cpu_seconds"]) <= _value(theirs["process_cpu_seconds"])


@pytest.mark.parametrize("by_size", [True, False])
def test_open_descriptors_are_counted(by_size: bool) -> None:
    if by_size and not counts_fds_by_size():
        pytest.skip("this kernel does not report /proc/<pid>/fd's size (Linux < 6.2)")
    stats = ProcessStats(by_size=by_size)
    before = _value(_by_name(stats.collect())["process_open_fds"])
    socks = [socket.socket() for _ in range(300)]
    try:
        during = _value(_by_name(stats.collect())["process_open_fds"])
    finally:
        for s in socks:
            s.close()
    assert during == before + 300


def test_on_this_kernel_the_size_is_the_count() -> None:
    """Where the kernel reports it (the CI machine's does), the size is used."""
    fd = "/proc/self/fd"
    if os.stat(fd).st_size == 0:
        pytest.skip("this kernel does not report /proc/<pid>/fd's size (Linux < 6.2)")
    assert counts_fds_by_size()
    assert ProcessStats()._by_size


def _fake_proc(root: Path, fds: int) -> Path:
    """A /proc-shaped folder: ``stat`` (btime), ``self/stat``, ``self/limits``
    and ``self/fd`` with ``fds`` entries."""
    (root / "self" / "fd").mkdir(parents=True)
    (root / "stat").write_text("cpu 1 2 3\nbtime 1700000000\n")
    fields = ["S"] + ["0"] * 50
    fields[11], fields[12], fields[19], fields[20], fields[21] = "150", "50", "1000", "4096", "3"
    (root / "self" / "stat").write_text("42 (sentry run) " + " ".join(fields) + "\n")
    (root / "self" / "limits").write_text(
        "Limit                     Soft Limit           Hard Limit           Units\n"
        "Max open files            2048                 4096                 files\n"
    )
    for i in range(fds):
        (root / "self" / "fd" / str(i)).touch()
    return root


def test_a_folder_that_is_not_procfs_is_listed(tmp_path: Path) -> None:
    """A directory's size there is its own (not a count): the entries are listed."""
    proc = _fake_proc(tmp_path, fds=7)
    assert not counts_fds_by_size(str(proc))
    stats = _by_name(ProcessStats(proc=str(proc)).collect())
    assert _value(stats["process_open_fds"]) == 7
    assert _value(stats["process_max_fds"]) == 2048
    assert _value(stats["process_cpu_seconds"]) == 2.0  # (150 + 50) ticks at 100 Hz
    assert _value(stats["process_start_time_seconds"]) == 1700000010.0
    assert _value(stats["process_resident_memory_bytes"]) == 3 * os.sysconf("SC_PAGE_SIZE")


def test_a_process_gone_or_unreadable_gives_what_can_be_read(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path, fds=2)
    (proc / "self" / "limits").write_text("Max processes 10 10 processes\n")  # no file limit
    stats = _by_name(ProcessStats(proc=str(proc)).collect())
    assert "process_open_fds" not in stats and "process_cpu_seconds" in stats
    (proc / "self" / "stat").unlink()  # the process ended between two reads
    assert ProcessStats(proc=str(proc)).collect() == []


def test_a_registry_scrape_carries_them() -> None:
    registry = CollectorRegistry()
    ProcessStats(registry=registry)
    text = generate_latest(registry).decode()
    assert "process_open_fds " in text and "process_max_fds " in text
