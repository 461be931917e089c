"""``sentry run`` whose log reader vanishes: the gateway keeps serving, the
lines are lost and counted (``sentry_log_writes_lost_total``), stderr says it
once, and the process still stops cleanly. (Before, the structlog line logged
on the way out raised ``BrokenPipeError``: the run ended with "sentry: error:
cannot start: [Errno 32] Broken pipe" and exit status 2, and nothing counted
the lost lines.)"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import urllib.request
from pathlib import Path
from typing import Any

from sentry.testing.backend import BackendConfig, start_backend
from sentry.testing.cluster import metric_value
from sentry.testing.demo_client import demo_client_main

CONFIG = """
gateway:
  listen: {{host: 127.0.0.1, port: 0}}
  tls: {{enabled: true, cert: certs/s.pem, key: certs/s.key}}
admin: {{listen: {{host: 127.0.0.1, port: 0}}, token_file: var/token}}
store: {{kind: sqlite, path: var/s.db}}
pools: [{{name: exchange, type: exchange, servers: ["{backend}"]}}]
routing: {{default: exchange}}
logging: {{format: json}}
"""


async def _sentry_run(cwd: Path, stdout: int) -> asyncio.subprocess.Process:
    """``sentry run --config sentry.yaml`` in ``cwd``, its stdout the pipe end
    ``stdout`` (given to the child, closed here), its stderr read by the test."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sentry", "run", "--config", "sentry.yaml",
        cwd=cwd, stdout=stdout, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    os.close(stdout)
    return proc


def _started(reader: Any) -> dict[str, Any]:
    while True:
        line = reader.readline()
        assert line, "sentry run exited early"
        event = json.loads(line)
        if event.get("event") == "started":
            return dict(event)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return str(resp.read().decode())


async def test_a_vanished_log_reader_neither_stops_the_gateway_nor_fails_a_request(
    tmp_path: Path,
) -> None:
    async with start_backend(BackendConfig()) as backend:
        (tmp_path / "sentry.yaml").write_text(CONFIG.format(backend=backend.url))
        read_end, write_end = os.pipe()
        proc = await _sentry_run(tmp_path, write_end)
        try:
            with os.fdopen(read_end, "rb") as reader:
                started = await asyncio.wait_for(asyncio.to_thread(_started, reader), 60)
            # the log collector is gone: every line from now on meets a broken pipe
            args = ["--url", started["devices"], "--user", "alice", "--password", "secret"]
            status = await asyncio.to_thread(demo_client_main, [*args, "--insecure"])
            assert status == 0
            assert backend.stats.requests[("alice", "Sync")] == 2
            metrics = await asyncio.to_thread(_get, started["admin"] + "/metrics")
            assert metric_value(metrics, "sentry_log_writes_lost_total") >= 2
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        text = err.decode()
        assert text.count("sentry: log output failed (BrokenPipeError)") == 1, text
        assert "Traceback" not in text, text


DEMO = """
demo:
  enabled: true
  backends: [{{pool: exchange, port: 0, users: "alice:alice-pw@example.com"}}]
"""


def _log_event(path: Path, event: str) -> dict[str, Any] | None:
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        try:
            found = json.loads(line)
        except json.JSONDecodeError:  # the last line, still being written
            continue
        if found.get("event") == event:
            return dict(found)
    return None


async def _started_in(log: Path, proc: asyncio.subprocess.Process) -> dict[str, Any]:
    while (started := _log_event(log, "started")) is None:
        assert proc.returncode is None, "sentry run exited early"
        await asyncio.sleep(0.05)
    return started


async def test_make_run_with_its_stdout_reader_gone_keeps_serving(tmp_path: Path) -> None:
    """``make run | head``: the demo banner, printed after ``started``, met a
    stdout whose reader was gone (before: "cannot start: Broken pipe", exit 2).
    The logs go to a file here, so the banner is the one write to stdout."""
    config = CONFIG.format(backend="http://127.0.0.1:1").replace(
        "logging: {format: json}", "logging: {format: json, file: sentry.log}"
    )
    (tmp_path / "sentry.yaml").write_text(config + DEMO.format())
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written
    proc = await _sentry_run(tmp_path, write_end)
    try:
        started = await asyncio.wait_for(_started_in(tmp_path / "sentry.log", proc), 60)
        metrics = await asyncio.to_thread(_get, started["admin"] + "/metrics")
        assert metric_value(metrics, "sentry_log_writes_lost_total") == 0  # (logs: a file)
        assert await asyncio.to_thread(_get, started["admin"] + "/healthz")
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert "log output failed (BrokenPipeError)" in err.decode()
