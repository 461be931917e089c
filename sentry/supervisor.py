"""``gateway.workers: N``: one supervisor process, N worker processes, shared listeners.

Approach. ``sentry run`` with ``workers`` above 1 becomes a supervisor: it
serves no request and runs no event loop. It checks the configured files and
makes what is missing once (``preflight``: certificates, the admin token, so
workers never race to create them), then binds the listeners itself: for each
worker *slot* one device socket and one admin socket, every one with
``SO_REUSEPORT`` on the same address (the first binds the configured port,
``0`` included, and the others bind the port it got). The kernel spreads new
connections over the sockets of a port evenly. Slot *i*'s two sockets are
inherited by worker *i* (``pass_fds``), a fresh ``sentry run`` process told
so by ``SENTRY_WORKER`` (``sentry.worker``); each worker opens its own store
connection and state, so each is a member of the cluster like a gateway on
another machine.

Why the supervisor binds and keeps the sockets (rather than each worker
binding its own): the port is chosen once (port 0 in tests and benches), a
taken port is a ``StartupError`` before any worker starts, and a worker that
dies does not take its socket with it: the connections the kernel had queued
for that slot wait in its backlog and are accepted by the replacement, instead
of being reset as a closed ``SO_REUSEPORT`` socket's queue is. The cost: while
a slot's worker is down (the restart delay below), the new connections the
kernel hashes to that slot wait too instead of going to another worker.

Start. Worker 1 starts alone and the others after it said it is ready (so
one process runs the store's migrations and the configuration's changes
first); a worker is ready when it wrote ``ready`` on its pipe, after its
listeners serve. A worker that exits before it is ready during the start
stops the whole start: exit status 2 after that worker's own error line. A
restarted worker not ready within ``START_TIMEOUT`` is killed (an exit like
any other).

Supervision. A worker that exits while the supervisor is not stopping is
restarted after a delay that doubles with each exit of the same slot within
``CRASH_WINDOW`` seconds (``BACKOFF_FIRST`` ... ``BACKOFF_MAX``); the
``CRASH_LIMIT``-th exit within the window is a crash loop: the supervisor
drains the other workers and exits with status 2 and one line naming the
worker, the number of exits and the last exit status. Every exit is logged
(``worker_exited``) with its status (``exit 1``, ``signal 9``).

Signals. Each worker runs in a session of its own: a terminal's Ctrl-C or a
signal to the supervisor's process group reaches the supervisor alone, which
decides what the workers get (and, where the kernel groups CPU time by session,
``sched_autogroup``, each worker is scheduled as its own group, as a separate
node's process would be). SIGTERM or SIGINT: drain. The supervisor closes its copies of the
listening sockets, sends SIGTERM to every worker (each stops accepting,
answers its held Pings and finishes what is in flight within
``gateway.shutdown_grace_seconds``, as a single gateway does), waits for all
of them (``grace + DRAIN_MARGIN`` seconds at most, then SIGKILL) and exits 0
when every worker exited 0. SIGHUP: the supervisor reopens its own log file
and forwards the signal to every worker, each of which reloads the
configuration (``sentry.reload``; ``gateway.workers`` itself needs a
restart). If the supervisor itself is killed, each worker sees its lifeline
close and drains.

Logs: the supervisor's lines carry ``worker: 0`` (and ``slot``: the worker an event is
about), a worker's lines its index.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

import structlog

from sentry.buildinfo import version
from sentry.errors import StartupError
from sentry.observability import configure_logging
from sentry.preflight import preflight
from sentry.settings import Settings
from sentry.tlstickets import new_keys
from sentry.worker import ENV, METRICS_DIR, WorkerSpec, close_quietly, write_status
from sentry.workerslots import (
    BACKOFF_FIRST,
    BACKOFF_MAX,
    CRASH_LIMIT,
    CRASH_WINDOW,
    Slot,
    bind_listeners,
    exit_status,
)

__all__ = ["DRAIN_MARGIN", "START_TIMEOUT", "Supervisor", "supervise"]

log = structlog.get_logger("sentry.supervisor")

START_TIMEOUT = 120.0  # a worker not ready after this long is stopped
DRAIN_MARGIN = 15.0  # beyond gateway.shutdown_grace_seconds before SIGKILL


class Supervisor:
    """The supervising loop (module comment); ``run`` returns the exit status."""

    def __init__(
        self,
        settings: Settings,
        config: Path,
        run_dir: Path,
        *,
        worker_argv: list[str] | None = None,
    ) -> None:
        """``worker_argv``: the command of a worker (default ``sentry run --config``)."""
        self.settings = settings
        self.config = config
        self.run_dir = run_dir
        self.worker_argv = worker_argv or [
            sys.executable, "-m", "sentry", "run", "--config", str(config)
        ]  # fmt: skip
        self.backoff_first, self.backoff_max = BACKOFF_FIRST, BACKOFF_MAX
        self.crash_window, self.crash_limit = CRASH_WINDOW, CRASH_LIMIT
        self._saved: dict[int, Any] = {}
        self.metrics_dir = run_dir / METRICS_DIR
        self.metrics_dir.mkdir(mode=0o700)
        self.ticket_keys = new_keys()  # every worker's, restarts included (tlstickets.py)
        n = settings.gateway.workers
        devices = bind_listeners(settings.gateway.listen, "gateway.listen", n)
        try:
            admins = bind_listeners(settings.admin.listen, "admin.listen", n)
        except StartupError:
            for sock in devices:
                sock.close()
            raise
        pairs = zip(devices, admins, strict=True)
        self.slots = [Slot(i + 1, d, a) for i, (d, a) in enumerate(pairs)]
        self.stopping = False
        self.hup = False
        self.log_file: Any = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    # --- addresses ---

    def url(self, listener: str) -> str:
        slot = self.slots[0]
        sock = slot.device if listener == "devices" else slot.admin
        tls = self.settings.gateway.tls if listener == "devices" else self.settings.admin.tls
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        return f"{'https' if tls.enabled else 'http'}://{shown}:{port}"

    # --- signals ---

    def _install_signals(self) -> None:
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)

        def stop(_sig: int, _frame: FrameType | None) -> None:
            self.stopping = True

        def hup(_sig: int, _frame: FrameType | None) -> None:
            self.hup = True

        handlers: dict[int, Any] = {
            signal.SIGTERM: stop,
            signal.SIGINT: stop,
            signal.SIGHUP: hup,
            signal.SIGCHLD: lambda _s, _f: None,  # only to wake the loop
        }
        for sig, handler in handlers.items():
            self._saved[sig] = signal.signal(sig, handler)

    def _wait(self, timeout: float) -> None:
        """Sleep until a signal, a worker's "ready" or ``timeout`` seconds."""
        fds = [self._wake_r] + [s.ready_fd for s in self.slots if s.ready_fd is not None]
        with contextlib.suppress(InterruptedError):
            readable, _, _ = select.select(fds, [], [], max(0.0, timeout))
            for fd in readable:
                if fd == self._wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(fd, 512)
                else:
                    self._read_ready(fd)

    def _read_ready(self, fd: int) -> None:
        slot = next(s for s in self.slots if s.ready_fd == fd)
        try:
            data = os.read(fd, 64)
        except OSError:
            data = b""
        close_quietly(fd)
        slot.ready_fd = None
        if data.startswith(b"ready") and slot.proc is not None:
            slot.ready = True
            pid = slot.proc.pid
            log.info("worker_ready", slot=slot.index, pid=pid, restarts=slot.restarts)
            self._write_status()

    # --- workers ---

    def _spawn(self, slot: Slot) -> None:
        ready_r, ready_w = os.pipe()
        life_r, life_w = os.pipe()
        keys_r, keys_w = os.pipe()  # 80 bytes: within the pipe's buffer, never blocks
        try:
            os.write(keys_w, self.ticket_keys)
        finally:
            os.close(keys_w)
        spec = WorkerSpec(
            index=slot.index,
            count=len(self.slots),
            device_fd=slot.device.fileno(),
            admin_fd=slot.admin.fileno(),
            ready_fd=ready_w,
            lifeline_fd=life_r,
            run_dir=str(self.run_dir),
            ticket_keys_fd=keys_r,
        )
        env = {**os.environ, ENV: spec.to_env(), "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir)}
        try:
            slot.proc = subprocess.Popen(
                self.worker_argv,
                env=env,
                pass_fds=(spec.device_fd, spec.admin_fd, ready_w, life_r, keys_r),
                start_new_session=True,  # signals come from the supervisor (module comment)
            )
        finally:
            os.close(ready_w)
            os.close(life_r)
            os.close(keys_r)
        slot.ready_fd, slot.lifeline_fd = ready_r, life_w
        slot.ready = False
        slot.started = time.monotonic()
        slot.restart_at = None
        log.info("worker_started", slot=slot.index, pid=slot.proc.pid, restarts=slot.restarts)
        self._write_status()

    def _write_status(self) -> None:
        workers = [
            {
                "index": s.index,
                "pid": None if s.proc is None else s.proc.pid,
                "ready": s.ready,
                "restarts": s.restarts,
            }
            for s in self.slots
        ]
        write_status(self.run_dir, {"count": len(self.slots), "workers": workers})

    def _reap(self) -> list[Slot]:
        """Slots whose worker exited since the last look (now without a process)."""
        from prometheus_client.multiprocess import mark_process_dead

        gone = []
        for slot in self.slots:
            if slot.proc is None or slot.proc.poll() is None:
                continue
            pid, code = slot.proc.pid, slot.proc.returncode
            mark_process_dead(pid, str(self.metrics_dir))  # type: ignore[no-untyped-call]
            close_quietly(slot.ready_fd)
            close_quietly(slot.lifeline_fd)
            slot.proc, slot.ready_fd, slot.lifeline_fd, slot.ready = None, None, None, False
            slot.last_status = exit_status(code)
            gone.append(slot)
            level = "info" if self.stopping and code == 0 else "error"
            getattr(log, level)("worker_exited", slot=slot.index, pid=pid, status=slot.last_status)
        if gone:
            self._write_status()
        return gone

    def _schedule_restart(self, slot: Slot, now: float) -> None:
        """Restart after a backoff, or raise ``StartupError`` for a crash loop."""
        delay = slot.restart_delay(
            now,
            window=self.crash_window,
            limit=self.crash_limit,
            first=self.backoff_first,
            most=self.backoff_max,
        )
        slot.restart_at = now + delay
        log.warning("worker_restart_scheduled", slot=slot.index, delay_seconds=delay)

    # --- start, serve, drain ---

    def _start(self) -> None:
        """Worker 1, then the others; a worker that exits before it is ready
        stops the start (``StartupError``)."""
        first, rest = self.slots[:1], self.slots[1:]
        for group in (first, rest):
            for slot in group:
                self._spawn(slot)
            deadline = time.monotonic() + START_TIMEOUT
            while not all(s.ready for s in group):
                if self.stopping:
                    return
                failed = [s for s in self._reap() if s in group]
                if failed:
                    s = failed[0]
                    raise StartupError(
                        "gateway.workers",
                        f"worker {s.index} stopped before it was ready ({s.last_status}; "
                        "its error, if any, is above)",
                    )
                if time.monotonic() > deadline:
                    late = [s.index for s in group if not s.ready]
                    raise StartupError(
                        "gateway.workers", f"worker(s) {late} not ready after {START_TIMEOUT:g} s"
                    )
                self._wait(0.5)

    def run(self) -> int:
        self._install_signals()
        try:
            self._start()
            if not self.stopping:
                log.info(
                    "started",
                    devices=self.url("devices"),
                    admin=self.url("admin"),
                    workers=len(self.slots),
                    pids=[s.proc.pid for s in self.slots if s.proc is not None],
                    version=version(),
                )
            while not self.stopping:
                self._serve_once()
        except BaseException:
            self._drain()
            raise
        return self._drain()

    def _serve_once(self) -> None:
        now = time.monotonic()
        pending = [s.restart_at for s in self.slots if s.restart_at is not None]
        self._wait(min(pending, default=now + 5.0) - now)
        if self.hup:
            self.hup = False
            self._forward_hup()
        now = time.monotonic()
        for slot in self.slots:
            late = slot.proc is not None and not slot.ready and now - slot.started > START_TIMEOUT
            if late and slot.proc is not None:
                log.error("worker_start_timeout", slot=slot.index, pid=slot.proc.pid)
                slot.proc.kill()  # reaped below or at the next turn: an exit like any other
        for slot in self._reap():
            if not self.stopping:
                self._schedule_restart(slot, now)
        for slot in self.slots:
            if (
                not self.stopping
                and slot.proc is None
                and slot.restart_at is not None
                and slot.restart_at <= now
            ):
                slot.restarts += 1
                self._spawn(slot)

    def _forward_hup(self) -> None:
        if self.log_file is not None:
            try:
                self.log_file.reopen()
            except OSError as exc:
                log.error("log_reopen_failed", file=str(self.log_file.path), error=exc.strerror)
        pids = []
        for slot in self.slots:  # one still starting reads the file anyway
            if slot.proc is not None and slot.ready:
                with contextlib.suppress(ProcessLookupError):
                    slot.proc.send_signal(signal.SIGHUP)
                    pids.append(slot.proc.pid)
        log.info("reload_forwarded", pids=pids)

    def _drain(self) -> int:
        """Stop every worker gracefully; 0 when each exited 0."""
        self.stopping = True
        for slot in self.slots:
            slot.restart_at = None
            slot.device.close()  # the workers' copies serve until each stops accepting
            slot.admin.close()
        live = [s for s in self.slots if s.proc is not None]
        log.info("draining", workers=[s.index for s in live])
        codes: dict[int, int] = {}
        for slot in live:
            assert slot.proc is not None
            with contextlib.suppress(ProcessLookupError):
                slot.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.gateway.shutdown_grace_seconds + DRAIN_MARGIN
        while any(s.proc is not None for s in live):
            procs = {s.index: s.proc for s in live if s.proc is not None}
            for slot in self._reap():
                proc = procs.get(slot.index)
                if proc is not None:
                    codes[slot.index] = proc.returncode
            if time.monotonic() > deadline:
                for slot in live:
                    if slot.proc is not None:
                        log.error("drain_timeout", slot=slot.index, pid=slot.proc.pid)
                        slot.proc.kill()
                deadline = time.monotonic() + 5.0
            self._wait(0.2)
        status = 0 if all(code == 0 for code in codes.values()) else 1
        log.info("stopped", workers={str(i): exit_status(c) for i, c in codes.items()})
        return status

    def close(self) -> None:
        for slot in self.slots:
            slot.device.close()
            slot.admin.close()
            close_quietly(slot.ready_fd)
            close_quietly(slot.lifeline_fd)
        if self._saved:
            signal.set_wakeup_fd(-1)
            for sig, handler in self._saved.items():
                signal.signal(sig, handler)
            self._saved.clear()
        close_quietly(self._wake_r)
        close_quietly(self._wake_w)


def supervise(settings: Settings, config: Path, root: Path = Path(".")) -> int:
    """``sentry run`` with ``gateway.workers`` > 1: returns the exit status;
    a start-up problem or a crash loop raises ``StartupError``."""
    report = preflight(settings, root, create=True)
    report.raise_first()
    try:
        log_file = configure_logging(settings.logging, fields={"worker": 0})
    except OSError as exc:
        raise StartupError("logging.file", f"{settings.logging.file}: {exc.strerror}") from None
    for made in report.generated:
        log.info("certificate_generated", file=made, fqdn=settings.gateway.fqdn)
    for warning in report.warnings:
        log.warning("startup_warning", problem=warning)
    run_dir = Path(tempfile.mkdtemp(prefix="sentry-workers-"))
    try:
        supervisor = Supervisor(settings, config, run_dir)
        supervisor.log_file = log_file
        try:
            return supervisor.run()
        finally:
            supervisor.close()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
        if log_file is not None:
            log_file.close()
