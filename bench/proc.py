"""Processes the bench starts, and what it reads about them from /proc.

Approach. Every server under test and every load generator runs in its own
process, started through ``bench._exec`` (which raises RLIMIT_NOFILE, asks the
kernel to SIGTERM the child when the bench dies, then execs the real
command) in a new session, so ``Proc.stop`` can end its whole process group.
Every ``Proc`` is remembered in ``_LIVE`` and ``stop_all`` (run from
``finally`` blocks and ``atexit``) ends whatever is still running: a bench run
never leaves a server behind.

CPU time is utime + stime of ``/proc/<pid>/stat`` (clock ticks, all threads),
RSS is the resident pages of ``/proc/<pid>/statm``; psutil is not a
dependency. Children talk to the bench over pipes in JSON lines
(``LineReader`` reads them with a timeout).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

__all__ = [
    "BenchError",
    "LineReader",
    "Proc",
    "cpu_seconds",
    "machine_info",
    "raise_nofile",
    "rss_bytes",
    "start",
    "stop_all",
    "tree_cpu",
    "tree_rss",
    "wait_port",
]

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
ROOT = Path(__file__).resolve().parent.parent
_LIVE: list[Proc] = []


class BenchError(RuntimeError):
    """A bench run could not go on (a server did not start, a child died)."""


def raise_nofile(want: int = 1_048_576) -> int:
    """Raise this process's open-file limit as far as allowed; return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
    except OSError:
        nr_open = hard
    target = min(want, nr_open)
    for limits in ((target, max(hard, target)), (min(target, hard), hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)
            return limits[0]
        except (ValueError, OSError):
            continue
    return soft


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds consumed so far by ``pid`` (all its threads)."""
    data = Path(f"/proc/{pid}/stat").read_text()
    fields = data[data.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` in bytes."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        todo.extend(int(c) for c in children)
    return out


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its live descendants."""
    total = 0.0
    for p in _tree(pid):
        try:
            data = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        fields = data[data.rindex(")") + 2 :].split()
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and its live descendants."""
    total = 0
    for p in _tree(pid):
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * PAGE
        except OSError:
            continue
    return total


def wait_port(host: str, port: int, timeout: float, proc: Proc | None = None) -> None:
    """Wait until ``host:port`` accepts connections (BenchError after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None:
            proc.check_alive()
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise BenchError(f"nothing listens on {host}:{port} after {timeout:.0f} s")


class LineReader:
    """JSON lines from a child's stdout, read with a timeout."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._fd = stream.fileno()
        self._buf = b""

    def line(self, timeout: float) -> bytes | None:
        """The next line (without newline); None at end of stream."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no line from child")
            ready, _, _ = select.select([self._fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(self._fd, 65536)
            if not chunk:
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line


class Proc:
    """One started child process: its pipes, log file and /proc readings."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log: Path) -> None:
        self.name = name
        self.popen = popen
        self.log = log
        self.pid = popen.pid
        self.reader = LineReader(popen.stdout) if popen.stdout is not None else None

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise BenchError(
                f"{self.name} exited with {self.popen.returncode}; log {self.log}:\n{self.tail()}"
            )

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def send(self, message: dict[str, Any]) -> None:
        """Write one JSON line to the child's stdin."""
        assert self.popen.stdin is not None
        self.popen.stdin.write(json.dumps(message).encode() + b"\n")
        self.popen.stdin.flush()

    def receive(self, timeout: float) -> dict[str, Any]:
        """Read the child's next JSON line (BenchError if it died or said nothing)."""
        assert self.reader is not None
        try:
            line = self.reader.line(timeout)
        except TimeoutError:
            raise BenchError(f"{self.name}: no answer in {timeout:.0f} s\n{self.tail()}") from None
        if line is None:
            self.popen.wait(5)
            raise BenchError(f"{self.name} ended early ({self.popen.returncode}):\n{self.tail()}")
        message: dict[str, Any] = json.loads(line)
        if message.get("event") == "error":
            raise BenchError(f"{self.name}: {message.get('message')}")
        return message

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL after ``timeout`` seconds."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait(5)
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        if self in _LIVE:
            _LIVE.remove(self)


def start(
    name: str,
    argv: list[str],
    workdir: Path,
    *,
    pipes: bool = False,
    root: Path | None = None,
    env: dict[str, str] | None = None,
) -> Proc:
    """Start ``argv`` via ``bench._exec`` in its own session; stderr to a log file.
    ``root``: another checkout whose ``sentry`` (and ``bench``) the child imports
    (the throughput bench's base gateway); ``env``: added to the environment."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"{name}.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    roots = [str(root)] if root is not None else []
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [*roots, str(ROOT), env.get("PYTHONPATH")]))
    with log.open("wb") as err:
        popen = subprocess.Popen(
            [sys.executable, "-m", "bench._exec", *argv],
            stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipes else err,
            stderr=err,
            cwd=workdir,
            env=env,
            start_new_session=True,
        )
    proc = Proc(name, popen, log)
    _LIVE.append(proc)
    return proc


def stop_all() -> None:
    """Stop every child still running (children first started, last stopped)."""
    for proc in reversed(list(_LIVE)):
        proc.stop()


atexit.register(stop_all)


def machine_info() -> dict[str, Any]:
    """Cores, CPU model, memory, kernel and Python of this machine."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError):
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
    }
