"""Loaded by ``bench/held_memory.py`` into the gateway process only.

With ``SENTRY_BENCH_TRACEMALLOC=<file>`` in the environment and ``run`` on
the command line (``sentry run``), Python's allocations are traced from the
start; each SIGUSR2 takes a snapshot: the first is the baseline, the second
writes the difference, by file, to ``<file>`` as JSON (bytes and blocks),
and its 80 largest source lines to ``<file>.lines``.
Any other process that finds this file on its path does nothing.
"""

import json
import os
import signal
import sys

_OUT = os.environ.get("SENTRY_BENCH_TRACEMALLOC")
if _OUT and "run" in sys.argv:
    import tracemalloc

    tracemalloc.start()
    _base: list[tracemalloc.Snapshot] = []

    def _snapshot(*_: object) -> None:
        snap = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        if not _base:
            _base.append(snap)
            return
        diff = {
            str(s.traceback[0].filename): [s.size_diff, s.count_diff]
            for s in snap.compare_to(_base[0], "filename")
        }
        lines = {
            f"{s.traceback[0].filename}:{s.traceback[0].lineno}": [s.size_diff, s.count_diff]
            for s in snap.compare_to(_base[0], "lineno")[:80]
        }
        with open(_OUT + ".tmp", "w", encoding="utf-8") as fh:
            json.dump(diff, fh)
        with open(_OUT + ".lines", "w", encoding="utf-8") as fh:
            json.dump(lines, fh)
        os.replace(_OUT + ".tmp", _OUT)

    signal.signal(signal.SIGUSR2, _snapshot)
