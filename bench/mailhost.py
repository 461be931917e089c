"""A mail server in C that holds Pings (``bench/mailhost.c``): the backend of
``storm`` and ``held-pings`` with ``--backend c``, when the demo backend's CPU
should not count, or its one process's descriptor limit is too few.

Approach. In a reconnect storm every re-issued Ping opens a backend leg, and
the demo backend (Python) took 3-5 of a 10,000-Ping storm's CPU-seconds on
the same two cores as the gateway and the phones: work the mail server does
on its own machine in production. ``mailhost.c`` answers as the demo backend
would for what a storm sends (OPTIONS, the primer's FolderSync, held Pings)
at a fraction of the cost, as the issue's own measurement put nginx behind
the gateway. It checks no credentials and keeps no mailbox: each answer is
one whole HTTP response built here from the demo backend's own parts
(``answers``), which the C program serves byte for byte:

* ``options``: the demo backend's OPTIONS answer (versions, commands);
* ``ping``: Ping Status 1 (the heartbeat expired), ``hold`` seconds after a
  Ping arrived;
* ``other``: a FolderSync answer (Status 1, SyncKey 1, no changes) to any
  other POST.

For ``throughput --backend c`` it also answers the EAS mix
(``bench/eas_mix.py``) as a static server would, the way the issue measured
with nginx: ``mix_answers`` plays one cycle of the mix against a demo backend
and keeps each command's whole HTTP response, byte for byte; the C program
answers a POST whose query names one of those commands (``Cmd=Sync``, ...)
with it at once, a Ping included. Sync keeps the cycle's second answer (three
mails with bodies), so both Syncs of a cycle get it: the backend does no work
per key, and the gateway relays the larger answer twice.

``start_mailhosts`` starts one per address (``--backend-hosts``), each its
own process: 100,000 held Pings need more descriptors than one process has
here (see bench/README.md, "Reaching 100,000 held Pings").
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import cc
from bench.eas_mix import CYCLE, SessionRequests, make_bodies, make_sessions, sync_key_of
from bench.proc import BenchError, Proc, start
from bench.servers import ServerProc, start_backend
from sentry.eas.status import FolderStatus, PingStatus
from sentry.eas.wbxml import encode
from sentry.testing.backend import PROTOCOL_COMMANDS
from sentry.testing.state import BackendConfig
from sentry.testing.wire import el, leaf, status

__all__ = [
    "MailGroup",
    "answers",
    "available",
    "counts",
    "mix_answers",
    "start_mailhost",
    "start_mailhosts",
]

SOURCE = Path(__file__).with_name("mailhost.c")
WBXML = "application/vnd.ms-sync.wbxml"


def available() -> str | None:
    """Why the mail server cannot be built here, or None."""
    return cc.available()


def _response(headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = ["HTTP/1.1 200 OK", *(f"{k}: {v}" for k, v in headers.items())]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


def answers() -> dict[str, bytes]:
    """The three whole HTTP responses ``mailhost.c`` serves (see the module comment)."""
    config = BackendConfig()
    common = {
        "MS-Server-ActiveSync": config.server_build,
        "X-Demo-Backend-Type": config.backend_type,
    }
    options = common | {
        "MS-ASProtocolVersions": ",".join(config.protocol_versions),
        "MS-ASProtocolCommands": PROTOCOL_COMMANDS,
        "Allow": "OPTIONS,POST",
        "Public": "OPTIONS,POST",
    }
    ping = encode(el("Ping", "Ping", status("Ping", PingStatus.HeartbeatExpired)))
    folders = encode(
        el(
            "FolderHierarchy",
            "FolderSync",
            status("FolderHierarchy", FolderStatus.Success),
            leaf("FolderHierarchy", "SyncKey", "1"),
            el("FolderHierarchy", "Changes", leaf("FolderHierarchy", "Count", 0)),
        )
    )
    wbxml = common | {"Content-Type": WBXML}
    return {
        "options": _response(options),
        "ping": _response(wbxml, ping),
        "other": _response(wbxml, folders),
    }


def _read_response(sock: socket.socket) -> bytes:
    """One whole HTTP/1.1 response framed by Content-Length (BenchError otherwise)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise BenchError("the demo backend closed the connection mid-answer")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    fields = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip()
    if b"transfer-encoding" in fields or fields.get(b"connection", b"").lower() == b"close":
        raise BenchError(f"the demo backend answered in a form mailhost cannot replay: {head!r}")
    length = int(fields[b"content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise BenchError("the demo backend closed the connection mid-body")
        body += chunk
    if len(body) != length or not head.startswith(b"HTTP/1.1 200 "):
        raise BenchError(f"unexpected answer from the demo backend: {head!r}")
    return head + b"\r\n\r\n" + body


def mix_answers(workdir: Path, heartbeat: int = 5) -> dict[str, bytes]:
    """Each command of the EAS mix with the demo backend's whole HTTP response
    to one session's cycle (Sync: the second, with mail; see the module comment)."""
    session = make_sessions(1)[0]
    backend = start_backend(workdir, 1)
    recorded: dict[str, bytes] = {}
    try:
        requests = SessionRequests(
            session, f"{backend.host}:{backend.port}", make_bodies(heartbeat)
        )
        with socket.create_connection((backend.host, backend.port), timeout=30) as sock:
            key = "0"
            for step, command in enumerate(CYCLE):
                sock.sendall(requests.request(step, key))
                recorded[command] = answer = _read_response(sock)
                if step == 0:
                    key = sync_key_of(answer.partition(b"\r\n\r\n")[2])
    finally:
        backend.proc.stop()
    return recorded


def start_mailhost(
    workdir: Path,
    *,
    hosts: tuple[str, ...] = ("127.0.0.1",),
    hold: float = 900.0,
    commands: dict[str, bytes] | None = None,
) -> ServerProc:
    """Build and start the mail server on ``hosts`` (one port), Pings held ``hold``
    seconds; ``commands``: a whole HTTP response per command name, served at once
    to a POST whose query names it (``mix_answers``)."""
    binary = cc.build(SOURCE, workdir)
    prefix = workdir / "answers"
    for name, data in answers().items():
        prefix.with_suffix(f".{name}").write_bytes(data)
    argv = [str(binary), ",".join(hosts), "0", str(prefix), repr(float(hold))]
    if commands:
        for name, data in commands.items():
            if not name.isalnum():
                raise BenchError(f"mailhost: a command name must be letters and digits: {name!r}")
            prefix.with_suffix(f".cmd.{name}").write_bytes(data)
        argv.append(",".join(commands))
    proc = start("mailhost", argv, workdir, pipes=True)
    ready = proc.receive(30)
    if ready.get("event") != "ready":
        proc.stop()
        raise BenchError(f"mailhost: unexpected {ready!r}")
    return ServerProc(proc, hosts[0], int(ready["port"]))


def counts(server: ServerProc, timeout: float = 10.0) -> dict[str, Any]:
    """What the mail server has served so far (accepted, held, pings, ...)."""
    server.proc.send({"cmd": "counts"})
    message = server.proc.receive(timeout)
    if message.get("event") != "counts":
        raise BenchError(f"mailhost said {message!r} where counts were expected")
    return message


class _Procs:
    """Several mail server processes read as one (CPU and RSS summed)."""

    def __init__(self, procs: list[Proc]) -> None:
        self.procs = procs

    def cpu(self) -> float:
        return sum(p.cpu() for p in self.procs)

    def rss(self) -> int:
        return sum(p.rss() for p in self.procs)

    def check_alive(self) -> None:
        for p in self.procs:
            p.check_alive()

    def stop(self) -> None:
        for p in self.procs:
            p.stop()


@dataclass
class MailGroup:
    """One mail server process per address (``start_mailhosts``): each has a
    descriptor limit of its own, which one process's would not give 100,000
    held Pings. ``urls`` are the pool's servers."""

    proc: _Procs
    urls: list[str]


def start_mailhosts(workdir: Path, hosts: tuple[str, ...], *, hold: float) -> MailGroup:
    """``start_mailhost`` once per address in ``hosts``, each its own process and port."""
    servers = [start_mailhost(workdir / f"mailhost-{i}", hosts=(h,), hold=hold)
               for i, h in enumerate(hosts)]  # fmt: skip
    return MailGroup(_Procs([s.proc for s in servers]), [s.url for s in servers])
