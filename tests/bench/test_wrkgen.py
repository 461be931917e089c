"""``bench/wrkgen.py``: wrk sends exactly the request it is given (method,
target, headers, a binary body), against the strict recording backend.

wrk is Debian's package ``wrk``: without it this test skips with the reason,
except under ``CI`` / ``SENTRY_REQUIRE_WRK=1`` (``.ci/run`` installs it),
where it fails. ``bench`` is imported in a child process started in the
project's root, as the other bench tests do."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sentry.testing.recording_backend import start_recording_backend
from sentry.testing.require import missing

ROOT = Path(__file__).resolve().parents[2]
CHILD = (
    "import json, sys\n"
    "from pathlib import Path\n"
    "from bench import wrkgen\n"
    "host, port, request, work, pipeline, *batch = json.loads(sys.stdin.read())\n"
    "result = wrkgen.run(host, port, request, 2, 1.0, Path(work), pipeline, *batch)\n"
    "result.pop('output')\n"
    "print(json.dumps(result))\n"
)


def _require_wrk() -> None:
    if shutil.which("wrk") is None:
        missing("wrk", "wrk is not installed (apt-get install wrk)", "SENTRY_REQUIRE_WRK")


async def test_wrk_sends_the_request_it_is_given_byte_for_byte(tmp_path: Path) -> None:
    _require_wrk()
    body = bytes(range(256)) + b'"\\\n\r\x00'
    request = (
        "POST /Microsoft-Server-ActiveSync?Cmd=FolderSync&User=a%20b&DeviceId=W1 HTTP/1.1\r\n"
        "Host: ignored\r\nAuthorization: Basic YTpi\r\nMS-ASProtocolVersion: 14.1\r\n"
        f"Content-Type: application/vnd.ms-sync.wbxml\r\nContent-Length: {len(body)}\r\n\r\n"
    ) + body.decode("latin-1")
    async with await start_recording_backend() as backend:
        host, port = backend.url.removeprefix("http://").rsplit(":", 1)
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, cwd=ROOT,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        job = json.dumps([host, int(port), request, str(tmp_path / "wrk"), 1]).encode()
        out, _ = await asyncio.wait_for(child.communicate(job), 60)
        assert child.returncode == 0
        result = json.loads(out)
    assert result["statuses"]["2xx/3xx"] > 0 and result["statuses"]["other"] == 0
    assert result["cpu_seconds"] > 0 and result["seconds"] > 0
    assert result["sched"] == "normal"
    assert backend.violations == []
    seen = backend.eas_requests()
    assert len(seen) >= result["statuses"]["2xx/3xx"]
    first = seen[0]
    assert (first.method, first.target) == (
        "POST",
        "/Microsoft-Server-ActiveSync?Cmd=FolderSync&User=a%20b&DeviceId=W1",
    )
    assert first.body == body
    assert first.header("Authorization") == "Basic YTpi"
    assert first.header("MS-ASProtocolVersion") == "14.1"
    assert first.header("Content-Length") == str(len(body))
    assert first.header("Host") == f"{host}:{port}"


class _CountsPerRead(asyncio.Protocol):
    """Answers every request with an empty 200 and notes how many requests
    each read brought (``reads``, shared by the server's connections)."""

    def __init__(self, reads: list[int]) -> None:
        self.reads, self.buffer = reads, b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        complete = 0
        while b"\r\n\r\n" in self.buffer:
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            if len(rest) < length:
                break
            self.buffer = rest[length:]
            complete += 1
        self.reads.append(complete)
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" * complete)


@pytest.mark.parametrize("batch", [False, True])
async def test_wrk_pipelines_as_many_requests_as_asked_and_counts_every_answer(
    tmp_path: Path, batch: bool
) -> None:
    """Also under SCHED_BATCH (``bench workers --generator-sched batch``): wrk
    runs under that policy and counts the same."""
    _require_wrk()
    request = "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
    reads: list[int] = []
    server = await asyncio.get_running_loop().create_server(
        lambda: _CountsPerRead(reads), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    try:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, cwd=ROOT,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        job = json.dumps(["127.0.0.1", port, request, str(tmp_path / "wrk"), 4, batch]).encode()
        out, _ = await asyncio.wait_for(child.communicate(job), 60)
        assert child.returncode == 0
    finally:
        server.close()
    result = json.loads(out)
    answered = result["statuses"]["2xx/3xx"]
    # four requests in each write: a read brings a whole batch (or more of them)
    assert max(reads) >= 4 and answered > 0 and result["statuses"]["other"] == 0
    # wrk counts each answer of a batch, not each batch; it stops with at most
    # one batch per connection unanswered
    assert sum(reads) - 2 * 4 <= answered <= sum(reads)
    assert result["sched"] == ("batch" if batch else "normal")


def test_a_storm_reconnected_by_wrk_holds_every_ping_again(tmp_path: Path) -> None:
    """``bench storm --generator wrk``: the Python generators drop their held
    Pings and wrk opens one connection per phone again, each with its own Ping."""
    _require_wrk()
    argv = ["storm", "--pings", "10", "--handshakes", "5", "--generators", "1"]
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--out", str(tmp_path), *argv, "--generator", "wrk"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    storm = json.loads((tmp_path / "storm.json").read_text())
    assert storm["held_before"] == 10 and storm["storm_seconds"] > 0
    assert storm["options"]["generator"] == "wrk" and "wrk_cpu_s" in storm
    assert "from wrk (C)" in (tmp_path / "storm.md").read_text()
