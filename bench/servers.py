"""Starting the servers under test, each in its own process.

Approach. The demo backend (``bench.backend_runner``) and the bare forwarder
(``bench.bare_forwarder``) print their port as a JSON line; the gateway is
started exactly as an operator starts it, ``sentry run --config <yaml>``,
from a configuration generated here (SQLite store, JSON logs with the access
log to a file, TLS on or off, no bundled demo backend: the pool points at
the separate backend process). Its listeners are on port 0 and the URLs are
read back from its ``started`` log event. The admin token file is created
by the gateway on first start; ``GatewayProc.token`` reads it.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.proc import BenchError, Proc, start
from sentry.certs import ensure_certificate

__all__ = [
    "GatewayProc",
    "ServerProc",
    "Wrap",
    "gateway_settings",
    "metric",
    "start_backend",
    "start_bare",
    "start_gateway",
]


@dataclass(frozen=True)
class Wrap:
    """A program the server under test runs under (``argv`` before its own,
    e.g. valgrind), the environment it adds and how long it may take to start."""

    argv: tuple[str, ...]
    env: dict[str, str]
    start_timeout: float = 60.0


@dataclass
class ServerProc:
    """A started server and where it listens."""

    proc: Proc
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass
class GatewayProc(ServerProc):
    """The gateway: device listener, admin listener, token and log file."""

    admin_url: str
    workdir: Path
    tls: bool

    @property
    def token(self) -> str:
        return (self.workdir / "admin-token").read_text().strip()

    def metrics_text(self, timeout: float = 60.0) -> str:
        """``/metrics`` (its loop may be busy for seconds: a storm, a ramp)."""
        with urllib.request.urlopen(self.admin_url + "/metrics", timeout=timeout) as resp:
            text: str = resp.read().decode()
            return text


def _ready_port(proc: Proc, timeout: float = 60.0) -> dict[str, Any]:
    message = proc.receive(timeout)
    if message.get("event") != "ready":
        raise BenchError(f"{proc.name}: unexpected {message!r}")
    return message


def start_backend(
    workdir: Path, users: int, *, hosts: tuple[str, ...] = ("127.0.0.1",), min_heartbeat: int = 1
) -> ServerProc:
    """The demo backend with ``users`` mailboxes ``user000000``.."""
    argv = [sys.executable, "-m", "bench.backend_runner", "--users", str(users)]
    argv += ["--hosts", ",".join(hosts), "--min-heartbeat", str(min_heartbeat)]
    proc = start("backend", argv, workdir, pipes=True)
    return ServerProc(proc, hosts[0], int(_ready_port(proc)["port"]))


def start_bare(
    workdir: Path, upstream: str, *, tls: bool = False, wrap: Wrap | None = None
) -> ServerProc:
    """The bare aiohttp forwarder in front of ``upstream`` (``tls``: serving
    TLS with a certificate of ``sentry.certs``, as the gateway's; ``wrap``:
    run under another program, see ``Wrap``)."""
    argv = [sys.executable, "-m", "bench.bare_forwarder", "--upstream", upstream]
    if tls:
        workdir.mkdir(parents=True, exist_ok=True)
        cert, key = workdir / "bare.pem", workdir / "bare.key"
        ensure_certificate(cert, key, "localhost")
        argv += ["--tls-cert", str(cert), "--tls-key", str(key)]
    if wrap is not None:
        argv = [*wrap.argv, *argv]
    env = wrap.env if wrap is not None else None
    proc = start("bare-forwarder", argv, workdir, pipes=True, env=env)
    timeout = wrap.start_timeout if wrap is not None else 60.0
    return ServerProc(proc, "127.0.0.1", int(_ready_port(proc, timeout)["port"]))


def gateway_settings(
    servers: list[str],
    *,
    tls: bool,
    store: dict[str, Any] | None = None,
    event_loop: str = "asyncio",
) -> dict[str, Any]:
    """The gateway configuration for a bench run (everything on; TLS as asked;
    ``store`` replaces the SQLite store section; ``event_loop``: asyncio or uvloop)."""
    settings: dict[str, Any] = {
        "gateway": {
            "fqdn": "localhost",
            "listen": {"host": "127.0.0.1", "port": 0},
            "tls": {"enabled": tls, "cert": "certs/sentry.pem", "key": "certs/sentry.key"},
        },
        "admin": {"listen": {"host": "127.0.0.1", "port": 0}, "token_file": "admin-token"},
        "store": store or {"kind": "sqlite", "path": "sentry.db"},
        "pools": [{"name": "exchange", "type": "exchange", "servers": servers}],
        "routing": {"default": "exchange"},
        "logging": {"level": "info", "format": "json", "file": "gateway.jsonl", "access_log": True},
    }
    if event_loop != "asyncio":  # the default written out only when it is not
        settings["gateway"]["event_loop"] = event_loop
    return settings


def _sentry_command() -> list[str]:
    script = Path(sys.executable).with_name("sentry")
    if script.exists():
        return [str(script)]
    found = shutil.which("sentry")
    return [found] if found else [sys.executable, "-m", "sentry"]


def start_gateway(
    workdir: Path,
    servers: list[str],
    *,
    tls: bool,
    timeout: float = 60.0,
    store: dict[str, Any] | None = None,
    event_loop: str = "asyncio",
    root: Path | None = None,
    wrap: Wrap | None = None,
) -> GatewayProc:
    """``sentry run --config`` with a fresh store and log under ``workdir``
    (``store``: another store section, e.g. a shared PostgreSQL; ``root``:
    the gateway of another checkout, e.g. a worktree of an earlier commit;
    ``wrap``: run under another program, see ``Wrap``)."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    config = workdir / "sentry.yaml"
    settings = gateway_settings(servers, tls=tls, store=store, event_loop=event_loop)
    config.write_text(yaml.safe_dump(settings, sort_keys=False))
    command = [*_sentry_command(), "run", "--config", str(config)]
    if root is not None or wrap is not None:
        # the console script would import this checkout's package; a wrapper
        # runs the interpreter itself, not a script
        command = [sys.executable, "-m", "sentry", "run", "--config", str(config)]
    if wrap is not None:
        command = [*wrap.argv, *command]
        timeout = max(timeout, wrap.start_timeout)
    proc = start("gateway", command, workdir, root=root, env=wrap.env if wrap else None)
    log = workdir / "gateway.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.check_alive()
        started = _started_event(log)
        if started is not None:
            host, port = _host_port(started["devices"])
            return GatewayProc(proc, host, port, started["admin"], workdir, tls)
        time.sleep(0.05)
    proc.stop()
    raise BenchError(f"gateway did not start in {timeout:.0f} s:\n{proc.tail()}")


def _started_event(log: Path) -> dict[str, Any] | None:
    if not log.exists():
        return None
    with log.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if '"started"' in line:
                event: dict[str, Any] = json.loads(line)
                if event.get("event") == "started":
                    return event
    return None


def _host_port(url: str) -> tuple[str, int]:
    match = re.match(r"https?://\[?([^\]/]+?)\]?:(\d+)$", url)
    if not match:
        raise BenchError(f"cannot read the gateway address from {url!r}")
    return match.group(1), int(match.group(2))


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric_name, _, rest = head.partition("{")
        if metric_name != name:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += float(value)
    return total
