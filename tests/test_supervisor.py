"""The supervisor's rules with scripted workers: real processes that say "ready"
(or not) and exit as the test needs, in place of ``sentry run``."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from pathlib import Path

import pytest

from sentry.errors import StartupError
from sentry.settings import Settings, settings_from_mapping
from sentry.supervisor import Supervisor
from sentry.worker import read_status
from sentry.workerslots import bind_listeners, exit_status

# A worker: says ready (or not), then exits with CODE after SLEEP seconds, or at SIGTERM.
WORKER = """
import json, os, signal, sys, time
spec = json.loads(os.environ["SENTRY_WORKER"])
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
if {ready}:
    os.write(spec["ready_fd"], b"ready\\n")
time.sleep({sleep})
sys.exit({code})
"""


def settings(workers: int = 2) -> Settings:
    return settings_from_mapping(
        {
            "gateway": {"workers": workers, "listen": {"host": "127.0.0.1", "port": 0}},
            "admin": {"listen": {"host": "127.0.0.1", "port": 0}, "console": {"enabled": False}},
            "store": {"kind": "postgresql", "dsn": "postgresql://nobody@127.0.0.1:1/none"},
        }
    )


def supervisor(
    tmp_path: Path, *, ready: bool = True, sleep: float = 60, code: int = 0
) -> Supervisor:
    script = WORKER.format(ready=ready, sleep=sleep, code=code)
    sup = Supervisor(
        settings(), tmp_path / "sentry.yaml", tmp_path, worker_argv=[sys.executable, "-c", script]
    )
    sup.backoff_first = 0.01
    return sup


def test_a_crash_loop_stops_the_node_with_one_clear_error(tmp_path: Path) -> None:
    sup = supervisor(tmp_path, sleep=0.05, code=3)
    try:
        with pytest.raises(StartupError) as err:
            sup.run()
    finally:
        sup.close()
    assert err.value.key == "gateway.workers"
    assert "exited 5 times within 60 s (last: exit 3); all workers stopped" in err.value.problem
    status = read_status(tmp_path)
    assert all(w["pid"] is None for w in status["workers"])  # the other worker was drained too


def test_a_worker_that_never_gets_ready_stops_the_start(tmp_path: Path) -> None:
    sup = supervisor(tmp_path, ready=False, sleep=0, code=2)
    try:
        with pytest.raises(StartupError, match=r"worker 1 stopped before it was ready \(exit 2"):
            sup.run()
    finally:
        sup.close()
    assert read_status(tmp_path)["workers"][1]["pid"] is None  # worker 2 never started


def test_sigterm_drains_and_exits_0_and_restores_the_signal_handlers(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGTERM)
    sup = supervisor(tmp_path)
    timer = threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        assert sup.run() == 0
    finally:
        timer.cancel()
        sup.close()
    assert signal.getsignal(signal.SIGTERM) is before
    assert [w["ready"] for w in read_status(tmp_path)["workers"]] == [False, False]


def test_listeners_share_the_port_the_first_one_got() -> None:
    socks = bind_listeners(settings().gateway.listen, "gateway.listen", 3)
    try:
        ports = {s.getsockname()[1] for s in socks}
        assert len(ports) == 1 and 0 not in ports
    finally:
        for s in socks:
            s.close()


def test_a_taken_port_names_its_key() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        listen = settings_from_mapping({"admin": {"listen": {"host": "127.0.0.1", "port": port}}})
        with pytest.raises(StartupError, match=rf"admin.listen: cannot listen on 127.0.0.1:{port}"):
            bind_listeners(listen.admin.listen, "admin.listen", 2)


def test_exit_status_text() -> None:
    assert (exit_status(1), exit_status(-9)) == ("exit 1", "signal 9")
