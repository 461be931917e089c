"""A worker slot's restart policy (sentry/workerslots.py)."""

from __future__ import annotations

import socket

import pytest

from sentry.errors import StartupError
from sentry.workerslots import Slot


def _slot() -> Slot:
    a, b = socket.socketpair()
    a.close()
    b.close()
    return Slot(2, a, b, last_status="signal 9")


def _delay(slot: Slot, now: float) -> float:
    return slot.restart_delay(now, window=60.0, limit=5, first=0.5, most=3.0)


def test_the_wait_doubles_with_each_exit_up_to_its_ceiling() -> None:
    slot = _slot()
    delays = [_delay(slot, t) for t in (0.0, 1.0, 2.0, 3.0)]
    assert delays == [0.5, 1.0, 2.0, 3.0]


def test_exits_older_than_the_window_are_forgotten() -> None:
    slot = _slot()
    for t in (0.0, 1.0, 2.0, 3.0):
        _delay(slot, t)
    assert _delay(slot, 100.0) == 0.5


def test_the_limit_th_exit_within_the_window_is_a_crash_loop() -> None:
    slot = _slot()
    for t in (0.0, 1.0, 2.0, 3.0):
        _delay(slot, t)
    crash_loop = r"worker 2 exited 5 times within 60 s \(last: signal 9\)"
    with pytest.raises(StartupError, match=crash_loop):
        _delay(slot, 4.0)
