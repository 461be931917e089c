"""``gateway.workers``: real ``sentry run`` supervisors with two workers on a real PostgreSQL.

One node (supervisor, two workers, a demo backend process) serves the tests that
leave it running; the drain test starts its own, since it ends it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from sentry.testing.eas_client import EasTestClient
from sentry.testing.pgfixtures import run_sync
from sentry.testing.postgres import Databases

PING = (
    '<Ping xmlns="Ping"><HeartbeatInterval>600</HeartbeatInterval><Folders><Folder>'
    "<Id>1</Id><Class>Email</Class></Folder></Folders></Ping>"
)


USERS = [f"user{i}" for i in range(4)]
PASSWORD = "secret"


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        metric_name, _, rest = head.partition("{")
        if metric_name == name and all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += float(value)
    return total


@dataclass
class Node:
    proc: subprocess.Popen[bytes]
    workdir: Path
    devices: str
    admin: str

    @property
    def log(self) -> list[dict[str, Any]]:
        text = (self.workdir / "gateway.jsonl").read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.log if e.get("event") == name]

    async def access_workers(self, expected: set[int]) -> set[int]:
        """The workers of the access lines written so far, waiting (a few
        seconds at most) for ``expected``: access lines wait up to
        ``logging.flush_ms`` before they are written."""
        deadline = time.monotonic() + 10
        while True:
            served = {e["worker"] for e in self.events("request")}
            if served == expected or time.monotonic() > deadline:
                return served
            await asyncio.sleep(0.02)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


def _config(dsn: str, backend: str, **gateway: Any) -> dict[str, Any]:
    return {
        "gateway": {
            "workers": 2,
            "listen": {"host": "127.0.0.1", "port": 0},
            "tls": {"enabled": False},
            "shutdown_grace_seconds": 5,
            **gateway,
        },
        "admin": {
            "listen": {"host": "127.0.0.1", "port": 0},
            "token_file": "admin-token",
            "console": {"enabled": False},
        },
        "store": {"kind": "postgresql", "dsn": dsn},
        "pools": [{"name": "exchange", "type": "exchange", "servers": [backend]}],
        "routing": {"default": "exchange"},
        "logging": {"format": "json", "file": "gateway.jsonl", "access_log": True},
    }


def start_node(workdir: Path, config: dict[str, Any]) -> Node:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "sentry.yaml").write_text(yaml.safe_dump(config))
    argv = [sys.executable, "-m", "sentry", "run", "--config", "sentry.yaml"]
    proc = subprocess.Popen(argv, cwd=workdir)
    node = Node(proc, workdir, "", "")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"sentry run exited: {proc.returncode}"
        if (workdir / "gateway.jsonl").exists():
            started = [e for e in node.events("started") if e.get("worker") == 0]
            if started:
                node.devices, node.admin = started[0]["devices"], started[0]["admin"]
                return node
        time.sleep(0.1)
    node.stop()
    raise AssertionError("the supervisor did not start")


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    users = ",".join(f"{u}:{PASSWORD}" for u in USERS)
    argv = [sys.executable, "-m", "sentry", "demo-backend", "--port", "0", "--no-provisioning"]
    argv += ["--users", users]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, cwd=tmp_path_factory.mktemp("backend"))
    try:
        assert proc.stdout is not None
        found = re.search(r"https?://[^/\s]+", proc.stdout.readline().decode())
        assert found, "the demo backend did not say where it listens"
        yield found.group(0)
    finally:
        proc.terminate()
        proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture(scope="module")
def module_dsn(pg_database: Databases) -> str:
    return run_sync(pg_database.create())


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, module_dsn: str, backend: str) -> Iterator[Node]:
    n = start_node(tmp_path_factory.mktemp("node"), _config(module_dsn, backend))
    try:
        yield n
    finally:
        assert n.stop() == 0


async def _get(url: str) -> tuple[int, Any]:
    """One request on a new connection (the kernel picks the worker per connection)."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as s,
        s.get(url, timeout=aiohttp.ClientTimeout(total=30)) as r,
    ):
        body = await r.read()
        kind = r.headers.get("Content-Type", "")
        return r.status, json.loads(body) if "json" in kind else body.decode()


async def _workers(node: Node, want: int = 2, tries: int = 200) -> dict[int, int]:
    """worker index -> pid, from ``/healthz`` answers on new connections."""
    seen: dict[int, int] = {}
    for _ in range(tries):
        status, body = await _get(node.admin + "/healthz")
        assert status == 200
        seen[body["worker"]] = body["pid"]
        if len(seen) == want:
            break
    return seen


async def _options(node: Node, n: int) -> None:
    for _ in range(n):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
            url = node.devices + "/Microsoft-Server-ActiveSync"
            async with s.options(url, timeout=aiohttp.ClientTimeout(total=30)) as r:
                assert r.status in (200, 401), r.status


async def test_both_workers_answer_on_one_port(node: Node) -> None:
    seen = await _workers(node)
    assert set(seen) == {1, 2}
    assert len(set(seen.values())) == 2 and node.proc.pid not in seen.values()
    status, body = await _get(node.admin + "/readyz")
    assert status == 200 and body["worker"] in (1, 2)
    await _options(node, 20)
    served = await node.access_workers({1, 2})
    assert served == {1, 2}  # the device port's connections went to both


async def test_metrics_add_up_over_workers(node: Node) -> None:
    _, before = await _get(node.admin + "/metrics")
    await _options(node, 12)
    _, after = await _get(node.admin + "/metrics")
    name = "sentry_requests_total"
    assert metric(after, name, command="OPTIONS") - metric(before, name, command="OPTIONS") == 12
    assert metric(after, "sentry_workers") == 2
    for worker in ("1", "2"):
        assert metric(after, "sentry_worker_up", worker=worker) == 1
        assert metric(after, "process_open_fds", worker=worker) > 0
    assert metric(after, "sentry_connections_max", listener="devices") > 0


async def test_a_killed_worker_is_restarted_and_the_port_keeps_answering(node: Node) -> None:
    before = await _workers(node)
    _, text = await _get(node.admin + "/metrics")
    restarts = metric(text, "sentry_worker_restarts_total", worker="2")
    os.kill(before[2], signal.SIGKILL)
    notes: list[str] = []
    now: dict[int, int] = {}
    pending: set[asyncio.Future[tuple[int, Any]]] = set()
    deadline = time.monotonic() + 60
    statuses: list[int] = []  # every answer from a worker, none refused at the cap
    # two requests every 250 ms: those the kernel gives slot 2 wait for its new
    # worker (fewer than the admin listener's cap of 64), worker 1 answers the
    # others at once, noting that worker 2 is being restarted. The kernel picks
    # the slot by the connection's ports: with one request per tick, a quick
    # restart could go by with none of them given to worker 1 (seen once in `make test`)
    while time.monotonic() < deadline and now.get(2) in (None, before[2]):
        pending |= {asyncio.ensure_future(_get(node.admin + "/readyz")) for _ in range(2)}
        done, pending = await asyncio.wait(pending, timeout=0.25)
        for status, body in (t.result() for t in done):
            statuses.append(status)  # a new worker is not ready until its pool is checked
            assert isinstance(body, dict), (status, body)
            now[body["worker"]] = body["pid"]
            notes += body.get("notes", [])
    answers = await asyncio.gather(*pending)
    assert all(isinstance(body, dict) and "worker" in body for _, body in answers)
    assert set(statuses) <= {200, 503}
    after = await _workers(node)  # both, each on a connection of its own
    assert after[2] == now[2] != before[2] and after[1] == before[1]
    assert "worker 2 is not serving (being restarted)" in notes
    await _options(node, 10)
    exits = [e for e in node.events("worker_exited") if e["pid"] == before[2]]
    assert exits and exits[0]["status"] == "signal 9" and exits[0]["slot"] == 2
    _, text = await _get(node.admin + "/metrics")
    assert metric(text, "sentry_worker_restarts_total", worker="2") == restarts + 1


async def test_sighup_reaches_every_worker(node: Node) -> None:
    already = len(node.events("config_reloaded"))
    node.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while len(node.events("config_reloaded")) < already + 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    reloaded = node.events("config_reloaded")[already:]
    assert sorted(e["worker"] for e in reloaded) == [1, 2]


async def test_sigterm_drains_held_pings_of_every_worker(
    tmp_path: Path, pg_dsn: str, backend: str
) -> None:
    node = start_node(tmp_path, _config(pg_dsn, backend))
    try:
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            url = node.devices + "/Microsoft-Server-ActiveSync"
            clients = [
                EasTestClient(
                    session, url, USERS[i % len(USERS)], PASSWORD, device_id=f"DRAIN{i:05d}"
                )
                for i in range(12)
            ]
            pings = [asyncio.ensure_future(c.post("Ping", PING, timeout=60)) for c in clients]
            deadline = time.monotonic() + 30
            held = 0.0
            while held < len(pings) and time.monotonic() < deadline:
                _, text = await _get(node.admin + "/metrics")
                held = metric(text, "sentry_held_long_polls")
                await asyncio.sleep(0.1)
            assert held == len(pings)
            node.proc.send_signal(signal.SIGTERM)
            answers = await asyncio.wait_for(asyncio.gather(*pings), 30)
        assert [(r.status, r.text("Status")) for r in answers] == [(200, "1")] * len(pings)
    finally:
        code = node.stop()
    assert code == 0
    ended = {e["worker"]: e["held_polls_ended"] for e in node.events("shutdown")}
    assert sum(ended.values()) == len(pings) and set(ended) == {1, 2}


def _options_over_tls(
    url: str, ctx: ssl.SSLContext, session: ssl.SSLSession | None
) -> tuple[ssl.SSLSession | None, bool]:
    """One OPTIONS on a new TLS connection offering ``session``: the session to
    offer next (with the ticket this connection got) and whether it resumed."""
    host, port = url.removeprefix("https://").rsplit(":", 1)
    with (
        socket.create_connection((host, int(port)), timeout=30) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost", session=session) as tls,
    ):
        tls.sendall(
            b"OPTIONS /Microsoft-Server-ActiveSync HTTP/1.1\r\nHost: localhost\r\n"
            b"Connection: close\r\n\r\n"
        )
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:80]
        return tls.session, tls.session_reused


async def test_a_phone_resumes_its_tls_session_on_either_worker(
    tmp_path: Path, pg_dsn: str, backend: str
) -> None:
    """The workers share the supervisor's ticket keys (``sentry.tlstickets``):
    a ticket from one worker resumes on the other. With a key set per worker,
    each new connection had an even chance of a full handshake."""
    node = start_node(tmp_path, _config(pg_dsn, backend, tls={"enabled": True}))
    try:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        session, resumed = await asyncio.to_thread(_options_over_tls, node.devices, ctx, None)
        assert session is not None and not resumed
        again = [
            await asyncio.to_thread(_options_over_tls, node.devices, ctx, session)
            for _ in range(12)
        ]
    finally:
        assert node.stop() == 0  # the workers write what they gathered as they stop
    served = {e["worker"] for e in node.events("request")}
    assert [r for _, r in again] == [True] * 12
    assert served == {1, 2}  # the kernel gave the connections to both workers
    shared = {(e["worker"], e["listener"]) for e in node.events("tls_ticket_keys_shared")}
    assert shared == {(1, "gateway.tls"), (2, "gateway.tls")}


def test_sqlite_with_two_workers_is_refused(tmp_path: Path) -> None:
    (tmp_path / "sentry.yaml").write_text("gateway: {workers: 2}\n")
    argv = [sys.executable, "-m", "sentry", "run", "--config", "sentry.yaml"]
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "gateway.workers: must be 1 with store.kind: sqlite" in done.stderr
    assert "postgresql" in done.stderr and done.stderr.count("\n") == 1
    assert not (tmp_path / "var").exists()  # nothing was started or made
