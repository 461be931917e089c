"""A worker slot of ``gateway.workers``: its listening sockets, its process and
its restart policy (``sentry.supervisor`` runs the slots).

Approach. The supervisor binds every slot's two listeners itself
(``bind_listeners``: one socket per slot on each port, all with
``SO_REUSEPORT``, the first binding the configured port, ``0`` included, and
the others the port it got), so a worker that dies does not take its socket
with it. A ``Slot`` holds those sockets, the worker process of the moment and
the pipes to it, and the times its workers exited: ``restart_delay`` turns
an exit into the wait before the next worker, doubling with each exit of the
slot within ``CRASH_WINDOW`` seconds (``BACKOFF_FIRST`` ... ``BACKOFF_MAX``),
and the ``CRASH_LIMIT``-th exit within the window into a ``StartupError``
(a crash loop: the supervisor drains the others and exits 2).
"""

from __future__ import annotations

import socket
import subprocess
from collections import deque
from dataclasses import dataclass, field

import structlog

from sentry.errors import StartupError
from sentry.proxy.connections import BACKLOG
from sentry.settings import ListenSettings

__all__ = [
    "BACKOFF_FIRST",
    "BACKOFF_MAX",
    "CRASH_LIMIT",
    "CRASH_WINDOW",
    "Slot",
    "bind_listeners",
    "exit_status",
]

log = structlog.get_logger("sentry.supervisor")

BACKOFF_FIRST = 0.5  # seconds before the first restart of a slot
BACKOFF_MAX = 10.0
CRASH_WINDOW = 60.0  # exits of one slot counted over this many seconds
CRASH_LIMIT = 5  # the 5th exit of one slot within the window ends the supervisor


def exit_status(code: int) -> str:
    """``exit 1`` or ``signal 9`` from a ``Popen.returncode``."""
    return f"signal {-code}" if code < 0 else f"exit {code}"


def bind_listeners(listen: ListenSettings, key: str, count: int) -> list[socket.socket]:
    """``count`` listening sockets on one address with ``SO_REUSEPORT``; a
    problem is a ``StartupError`` naming ``key``."""
    host, port = listen.host, listen.port
    out: list[socket.socket] = []
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _name, address = infos[0]
        for _ in range(count):
            sock = socket.socket(family, kind, proto)
            out.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
            address = sock.getsockname()  # port 0: the others take the port the first got
    except OSError as exc:
        for sock in out:
            sock.close()
        problem = exc.strerror or str(exc)
        raise StartupError(key, f"cannot listen on {host}:{port}: {problem}") from None
    return out


@dataclass
class Slot:
    """Worker ``index``'s sockets and its current process, if any."""

    index: int
    device: socket.socket
    admin: socket.socket
    proc: subprocess.Popen[bytes] | None = None
    ready_fd: int | None = None  # read end: "ready" from the worker
    lifeline_fd: int | None = None  # write end: closed when the supervisor goes
    ready: bool = False
    started: float = 0.0
    restart_at: float | None = None
    exits: deque[float] = field(default_factory=deque)
    restarts: int = 0
    last_status: str = ""

    def restart_delay(
        self, now: float, *, window: float, limit: int, first: float, most: float
    ) -> float:
        """Note an exit at ``now``; the seconds before the next worker, or a
        ``StartupError`` on the ``limit``-th exit within ``window`` seconds."""
        exits = self.exits
        exits.append(now)
        while exits and now - exits[0] > window:
            exits.popleft()
        if len(exits) >= limit:
            problem = (
                f"worker {self.index} exited {len(exits)} times within "
                f"{window:g} s (last: {self.last_status}); all workers stopped"
            )
            log.error("crash_loop", slot=self.index, exits=len(exits), problem=problem)
            raise StartupError("gateway.workers", problem)
        return min(most, first * 2.0 ** (len(exits) - 1))
