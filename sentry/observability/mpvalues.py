"""prometheus_client's multiprocess values without a system call on every update.

Approach. Under ``gateway.workers`` each worker runs prometheus_client in
multiprocess mode (``sentry.worker``): every update of a metric writes the
value into the process's memory-mapped file, where any worker's scrape reads
it. prometheus_client's value class (``MmapedValue``) first asks the kernel
for the process id, on every update, to notice a ``fork()`` and start new
files for the child; then looks the value's place in its file up by key:
about 1.4 µs an update against 0.3 µs for the single-process value
(``bench/bench_mpvalues.py``). In a profiled two-worker node answering
refused requests, its ``inc`` was 5.5 % of a worker's samples.

A worker is started by ``exec`` (``sentry.supervisor``), never forked, and
forks nothing that updates a metric, so that check cannot fire in it (should
it fire in ``get``, which keeps it, every value finds its place in the new
files again).
``FastMmapedValue`` subclasses the class prometheus_client made for this
process: construction is prometheus_client's own (the same files, names and
keys; a value is placed in its file when it is made), and an update writes
the value at the place found then, with the same slice assignment
prometheus_client uses (whole, never a torn zero for a concurrent reader).
The file's map is looked up on each write, since prometheus_client remaps a
file that grows; a place in the file never moves. A lock still guards each
update, as prometheus_client's does (the event loop's thread and the
executor's may both count).

``install`` makes it ``prometheus_client.values.ValueClass`` when
multiprocess mode is on; a worker calls it first thing (``sentry run`` under a
supervisor, ``cli_ops``), before ``Metrics`` builds any metric; outside it
(one process, the default) it changes nothing. It first tries a mapped file
of its own the way ``FastMmapedValue`` writes: should a later
prometheus_client keep its files otherwise, the stock class stays.
"""

from __future__ import annotations

import os
import struct
import tempfile
import threading
from typing import Any

from prometheus_client import mmap_dict, values

__all__ = ["install", "installed"]

_PACK = struct.Struct("dd").pack
_LOCK = threading.Lock()
_classes: dict[type, type] = {}


def _fast(base: Any) -> type:
    """``base`` (prometheus_client's ``MmapedValue`` of this process) with
    updates that write straight to the value's place."""

    class FastMmapedValue(base):  # type: ignore[misc]
        """A ``MmapedValue`` whose updates skip the fork check and the key lookup."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)  # reads the value: it has a place now
            self._place()

        def _MmapedValue__reset(self) -> None:  # prometheus_client's private name
            # prometheus_client's own: at construction, and for every value when
            # its check (still made by ``get``) sees a new process id: new files
            super()._MmapedValue__reset()
            self._place()

        def _place(self) -> None:
            self._pos = self._file._positions[self._key]
            self._end = self._pos + 16

        def inc(self, amount: float) -> None:
            with _LOCK:
                self._value += amount
                self._timestamp = 0.0
                self._file._m[self._pos : self._end] = _PACK(self._value, 0.0)

        def set(self, value: float, timestamp: float | None = None) -> None:
            with _LOCK:
                self._value = value
                self._timestamp = timestamp or 0.0
                self._file._m[self._pos : self._end] = _PACK(value, self._timestamp)

    FastMmapedValue.__qualname__ = FastMmapedValue.__name__
    return FastMmapedValue


def install() -> bool:
    """Make new metrics' values ``FastMmapedValue`` when prometheus_client is
    in multiprocess mode; True if it did (or had)."""
    current = values.ValueClass
    if current in _classes.values():
        return True
    if not getattr(current, "_multiprocess", False) or not _compatible():
        return False
    values.ValueClass = _classes.setdefault(current, _fast(current))
    return True


def installed() -> bool:
    """Whether new metrics get ``FastMmapedValue``."""
    return values.ValueClass in _classes.values()


def _compatible() -> bool:
    """Whether prometheus_client's mapped file still works as ``FastMmapedValue``
    relies on: tried on a file of its own, not assumed."""
    files: Any = mmap_dict  # untyped
    with tempfile.TemporaryDirectory() as folder:
        probe = files.MmapedDict(os.path.join(folder, "probe.db"))
        try:
            probe.read_value("probe")
            pos = probe._positions["probe"]
            probe._m[pos : pos + 16] = _PACK(2.5, 0.0)
            return bool(probe.read_value("probe") == (2.5, 0.0))
        except (AttributeError, KeyError, TypeError, ValueError):
            return False
        finally:
            probe.close()
