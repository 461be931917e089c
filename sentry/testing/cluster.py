"""Several real ``sentry run`` processes on one PostgreSQL, for tests and bench/.

``start_backend_process`` runs a demo EAS backend (``sentry demo-backend``) in
a process of its own and reads its URL from the line it prints;
``start_node`` writes a configuration (HTTP devices and admin on free ports,
``store.kind: postgresql`` on the given DSN, a JSON log file) and runs
``sentry run`` on it, reading the addresses back from the ``started`` log
event. ``Node.admin`` calls the admin API with the node's token,
``Node.metric`` reads one sample of its ``/metrics``. Every process is
stopped by ``stop`` (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "Node",
    "Proc",
    "metric_value",
    "node_settings",
    "start_backend_process",
    "start_node",
]


@dataclass
class Proc:
    """A child process and its log."""

    popen: subprocess.Popen[bytes]
    log: Path

    def stop(self, timeout: float = 15.0) -> None:
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Node:
    """A running ``sentry run`` process."""

    name: str
    proc: Proc
    url: str  # devices (http)
    admin_url: str
    token: str
    workdir: Path

    def admin(self, method: str, path: str, body: Any = None, timeout: float = 60.0) -> Any:
        """Call the admin API; returns (status, JSON body, headers)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.admin_url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read() or b"null"), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                answer = json.loads(raw)
            except ValueError:
                answer = raw.decode(errors="replace")
            return exc.code, answer, dict(exc.headers)

    def get(self, path: str, timeout: float = 30.0) -> tuple[int, str]:
        """GET a health or metrics path (no token needed)."""
        try:
            with urllib.request.urlopen(self.admin_url + path, timeout=timeout) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def metric(self, name: str, **labels: str) -> float:
        return metric_value(self.get("/metrics")[1], name, **labels)

    def log_events(self, event: str) -> list[dict[str, Any]]:
        out = []
        for line in (self.workdir / "sentry.jsonl").read_text(errors="replace").splitlines():
            if f'"{event}"' in line:
                with contextlib.suppress(ValueError):
                    item = json.loads(line)
                    if item.get("event") == event:
                        out.append(item)
        return out


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        metric_name, _, rest = head.partition("{")
        if metric_name != name:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += float(value)
    return total


def _sentry() -> list[str]:
    script = Path(sys.executable).with_name("sentry")
    return [str(script)] if script.exists() else [sys.executable, "-m", "sentry"]


def start_backend_process(
    workdir: Path, backend_type: str, users: str, *, timeout: float = 60.0
) -> tuple[Proc, str]:
    """A demo backend process (``users``: ``name:password,...``); returns it and its URL."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"backend-{backend_type}.log"
    argv = [*_sentry(), "demo-backend", "--port", "0", "--type", backend_type, "--users", users]
    with log.open("wb") as err:
        popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, start_new_session=True)
    proc = Proc(popen, log)
    assert popen.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = popen.stdout.readline().decode()
        if " on " in line:
            url = line.split(" on ")[1].split(" for ")[0].strip()
            return proc, url
        if not line and popen.poll() is not None:
            break
    proc.stop()
    raise RuntimeError(f"the demo backend did not start:\n{proc.tail()}")


def node_settings(
    dsn: str, pools: list[dict[str, Any]], routing: dict[str, Any], **sections: Any
) -> dict[str, Any]:
    """A node's configuration (devices over HTTP; ``sections`` override)."""
    data: dict[str, Any] = {
        "gateway": {
            "fqdn": "localhost",
            "listen": {"host": "127.0.0.1", "port": 0},
            "tls": {"enabled": False},
        },
        "admin": {"listen": {"host": "127.0.0.1", "port": 0}, "token_file": "admin-token"},
        "store": {
            "kind": "postgresql",
            "dsn": dsn,
            "touch_flush_seconds": 1.0,
            "check_interval_seconds": 0.5,
            "connect_timeout_seconds": 2.0,
            "feed_poll_seconds": 0.5,
        },
        "pools": pools,
        "routing": routing,
        "logging": {"level": "info", "format": "json", "file": "sentry.jsonl"},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


def start_node(
    workdir: Path, name: str, settings: dict[str, Any], *, timeout: float = 60.0
) -> Node:
    """``sentry run`` with ``settings`` in ``workdir/name``."""
    home = workdir / name
    home.mkdir(parents=True, exist_ok=True)
    config = home / "sentry.yaml"
    config.write_text(yaml.safe_dump(settings, sort_keys=False))
    out = home / "stdout.log"
    with out.open("wb") as sink:
        popen = subprocess.Popen(
            [*_sentry(), "run", "--config", str(config)],
            cwd=home,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    proc = Proc(popen, out)
    log = home / "sentry.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"node {name} exited:\n{proc.tail()}")
        if log.exists():
            for line in log.read_text(errors="replace").splitlines():
                if '"started"' in line:
                    event = json.loads(line)
                    if event.get("event") == "started":
                        token = (home / "admin-token").read_text().strip()
                        return Node(name, proc, event["devices"], event["admin"], token, home)
        time.sleep(0.05)
    proc.stop()
    raise RuntimeError(f"node {name} did not start in {timeout:.0f} s:\n{proc.tail()}")
