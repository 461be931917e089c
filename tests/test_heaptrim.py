"""The heap trim after a burst of new connections (sentry/heaptrim.py)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from sentry.heaptrim import Arrivals, HeapTrimmer, malloc_trim
from sentry.observability import Metrics
from sentry.testing.gateway import demo_gateway


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, pad: int) -> int:
        self.calls.append((pad, threading.get_ident()))
        return 1


def _trimmer(after: int) -> tuple[Arrivals, HeapTrimmer, _Recorder, Metrics]:
    arrivals, trim = Arrivals(), _Recorder()
    metrics = Metrics(CollectorRegistry())
    return arrivals, HeapTrimmer(arrivals, metrics, after=after, trim=trim), trim, metrics


def test_a_trim_waits_until_a_burst_of_connections_has_ended() -> None:
    arrivals, trimmer, _, _ = _trimmer(after=1000)
    arrivals.count = 600
    assert not trimmer.due()  # not enough yet
    arrivals.count = 1500
    assert not trimmer.due()  # 900 in the last interval: the burst goes on
    arrivals.count = 1590
    assert not trimmer.due()  # 90, a tenth of the busiest interval: still going
    arrivals.count = 1679
    assert not trimmer.due()  # 89: one quiet second may be a lull inside the ramp
    arrivals.count = 1979
    assert not trimmer.due()  # 300: it was, the ramp goes on
    arrivals.count = 2068
    assert not trimmer.due()  # 89: quiet once
    arrivals.count = 2157
    assert trimmer.due()  # 89 again, twice in a row: over (the phones that keep coming)
    assert trimmer.due()  # a trim is due until one runs


def test_steady_arrivals_without_a_burst_are_not_trimmed_again_and_again() -> None:
    arrivals, trimmer, _, _ = _trimmer(after=100)
    for _ in range(20):  # 60 a second, 1,200 in all: twelve times ``after``
        arrivals.count += 60
        assert not trimmer.due()


async def test_a_trim_runs_off_the_event_loop_once_per_burst() -> None:
    arrivals, trimmer, trim, metrics = _trimmer(after=100)
    arrivals.count = 150
    assert [trimmer.due() for _ in range(3)] == [False, False, True]
    with capture_logs() as events:
        await trimmer.trim_now()
    assert [pad for pad, _ in trim.calls] == [0]
    assert trim.calls[0][1] != threading.get_ident()  # in a thread: the loop goes on
    assert metrics.heap_trims._value.get() == 1
    [line] = [e for e in events if e["event"] == "heap_trimmed"]
    assert line["connections"] == 150 and line["released_bytes"] >= 0
    # the next trim needs another burst of 100
    arrivals.count = 249
    assert not trimmer.due()
    arrivals.count = 250
    assert [trimmer.due() for _ in range(2)] == [False, True]


async def test_no_trimmer_runs_when_turned_off_or_without_glibc() -> None:
    arrivals = Arrivals()
    metrics = Metrics(CollectorRegistry())
    off = HeapTrimmer(arrivals, metrics, after=0, trim=_Recorder())
    absent = HeapTrimmer(arrivals, metrics, after=10, trim=None)
    for trimmer in (off, absent):
        trimmer.start()
        assert not trimmer.enabled and trimmer._task is None
        await trimmer.close()
    assert await absent.trim_now() == 0


_FRAGMENTED_HEAP = """
import asyncio
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs
from sentry.heaptrim import Arrivals, HeapTrimmer
from sentry.observability import Metrics

# 80 MB in blocks malloc serves from its heap (over Python's 512-byte small
# objects, under the 128 KiB mmap threshold), then one block above them all:
# freeing the rest leaves 80 MB free in the middle, which free() keeps
blocks = [bytes(4000) for _ in range(20_000)]
pin = bytes(4000)
del blocks
metrics = Metrics(CollectorRegistry())
trimmer = HeapTrimmer(Arrivals(), metrics, after=1)
print(asyncio.run(trimmer.trim_now()), metrics.heap_trim_released._value.get())
"""


@pytest.mark.skipif(malloc_trim is None, reason="malloc_trim is glibc's (Linux)")
def test_a_trim_gives_back_the_memory_a_burst_freed(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    out = (
        subprocess.run(
            [sys.executable, "-c", _FRAGMENTED_HEAP],
            capture_output=True,
            text=True,
            check=True,
            cwd=root,
            timeout=60,
        )
        .stdout.splitlines()[-1]
        .split()
    )
    released, counted = int(out[0]), float(out[1])
    assert released > 40 * 2**20  # most of the 80 MB
    assert counted == released


@pytest.mark.skipif(malloc_trim is None, reason="malloc_trim is glibc's (Linux)")
async def test_the_gateway_trims_after_a_burst_of_device_connections(
    tmp_path: Path,
) -> None:
    gateway = {"tls": {"enabled": False}, "connections": {"heap_trim_after": 5}}
    async with demo_gateway(tmp_path, gateway=gateway) as gw:
        assert gw.sample("sentry_heap_trims_total") == 0
        host, port = gw.url.removeprefix("http://").rsplit(":", 1)
        for _ in range(5):
            _, writer = await asyncio.open_connection(host, int(port))
            writer.close()
            await writer.wait_closed()
        await gw.until(lambda: gw.sample("sentry_heap_trims_total") == 1)
        # (one trim per burst is the unit tests' business: no sleep proves it here)
