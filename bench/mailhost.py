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

``start_mailhosts`` starts one per address (``--backend-hosts``), each its
own process: 100,000 held Pings need more descriptors than one process has
here (see bench/README.md, "Reaching 100,000 held Pings").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import cc
from bench.proc import BenchError, Proc, start
from bench.servers import ServerProc
from sentry.eas.status import FolderStatus, PingStatus
from sentry.eas.wbxml import encode
from sentry.testing.backend import PROTOCOL_COMMANDS
from sentry.testing.state import BackendConfig
from sentry.testing.wire import el, leaf, status

__all__ = ["MailGroup", "answers", "available", "counts", "start_mailhost", "start_mailhosts"]

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


def start_mailhost(
    workdir: Path, *, hosts: tuple[str, ...] = ("127.0.0.1",), hold: float = 900.0
) -> ServerProc:
    """Build and start the mail server on ``hosts`` (one port), Pings held ``hold`` seconds."""
    binary = cc.build(SOURCE, workdir)
    prefix = workdir / "answers"
    for name, data in answers().items():
        prefix.with_suffix(f".{name}").write_bytes(data)
    argv = [str(binary), ",".join(hosts), "0", str(prefix), repr(float(hold))]
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
