"""What a scrape's ``process_*`` metrics cost with many descriptors open.

Run: ``.venv/bin/python bench/bench_process.py [descriptors]``. The process
opens ``descriptors`` sockets (20,000 by default, fewer when its open-file
limit is lower: a held Ping costs the gateway two), then times one
``collect()`` of prometheus_client's ``ProcessCollector`` (the baseline: it
lists ``/proc/self/fd``) and of ``sentry.observability.process.ProcessStats``
(the directory's size where the kernel reports it, Linux 6.2+; the listing
elsewhere), best of several rounds each, in the same run, and checks both
count the same descriptors.
"""

from __future__ import annotations

import resource
import socket
import sys
import time
from collections.abc import Callable, Iterable

from prometheus_client import ProcessCollector
from prometheus_client.metrics_core import Metric

from sentry.observability.process import ProcessStats, counts_fds_by_size


def _best(collect: Callable[[], Iterable[Metric]], rounds: int) -> tuple[float, float]:
    """Best seconds of one collect over ``rounds``, and the open_fds it said."""
    best, fds = float("inf"), 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        metrics = list(collect())
        best = min(best, time.perf_counter() - t0)
        fds = next(m.samples[0].value for m in metrics if m.name == "process_open_fds")
    return best, fds


def main(want: int) -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    count = max(0, min(want, soft - 100))
    socks = [socket.socket() for _ in range(count)]
    try:
        theirs = ProcessCollector(registry=None)  # type: ignore[no-untyped-call]
        base, base_fds = _best(theirs.collect, 20)
        ours, our_fds = _best(ProcessStats().collect, 20)
    finally:
        for s in socks:
            s.close()
    if abs(base_fds - our_fds) > 1:  # the listing opens one descriptor of its own
        raise SystemExit(f"the two counts differ: {base_fds:.0f} against {our_fds:.0f}")
    how = "the size of /proc/self/fd" if counts_fds_by_size() else "listing (kernel < 6.2)"
    print(f"process_* metrics, {count:,} sockets open ({our_fds:,.0f} descriptors)\n")
    print("| collector | one collect | ratio |")
    print("| --- | ---: | ---: |")
    print(
        f"| prometheus_client ProcessCollector (lists /proc/self/fd) | {base * 1e3:.3f} ms | 1.00 |"
    )
    print(f"| ProcessStats ({how}) | {ours * 1e3:.3f} ms | {ours / base:.4f} |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
