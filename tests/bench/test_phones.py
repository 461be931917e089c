"""``bench/phones.c``: the storm bench's phones in C hold their Pings, resume
their own TLS sessions after a storm, and try again after a connection
closed before an answer.

It needs a C compiler and OpenSSL's headers (Debian's ``gcc`` and
``libssl-dev``): without them these tests skip with the reason, except under
``CI`` / ``SENTRY_REQUIRE_CC=1`` (``.ci/run`` installs them), where they
fail. ``bench`` runs in child processes started in the project's root, as
the other bench tests do."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from sentry.testing.require import missing

ROOT = Path(__file__).resolve().parents[2]
CHILD = (
    "import json, sys\n"
    "from pathlib import Path\n"
    "from bench import phones\n"
    "port, requests, work = json.loads(sys.stdin.readline())\n"
    "fleet = phones.Phones('127.0.0.1', port, [r.encode() for r in requests], Path(work),\n"
    "                      tls=False, resume=False, rate=0)\n"
    "fleet.ramp()\n"
    "print(json.dumps(fleet.sent(30)), flush=True)\n"
    "sys.stdin.readline()\n"
    "print(json.dumps(fleet.stop()), flush=True)\n"
)


def _require_cc() -> None:
    check = "from bench import phones; print(phones.available() or '')"
    done = subprocess.run(
        [sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, check=True
    )
    reason = done.stdout.strip()
    if reason:
        missing("a C compiler and OpenSSL's headers", reason, "SENTRY_REQUIRE_CC")


def _storm(out: Path, *extra: str) -> subprocess.Popen[str]:
    argv = ["storm", "--pings", "12", "--handshakes", "4", "--generators", "1"]
    return subprocess.Popen(
        [sys.executable, "-m", "bench", "--out", str(out), *argv, "--generator", "phones", *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def test_phones_hold_their_pings_and_each_resumes_its_own_session(tmp_path: Path) -> None:
    _require_cc()
    runs = {
        # the resuming phones' Pings held by the mail server in C (bench/mailhost.c)
        "resume": _storm(tmp_path / "resume", "--resume", "--backend", "c"),
        "full": _storm(tmp_path / "full"),
        "plain": _storm(tmp_path / "plain", "--no-tls"),
    }
    outputs = {name: proc.communicate(timeout=120)[0] for name, proc in runs.items()}
    for name, proc in runs.items():
        assert proc.returncode == 0, f"{name}:\n{outputs[name]}"
    report = {name: json.loads((tmp_path / name / "storm.json").read_text()) for name in runs}
    for r in report.values():
        assert r["held_before"] == 12 and r["storm_seconds"] > 0
        assert r["retries"] == 0 and all(not e for e in r["errors"])
    # every phone offered the ticket its own connection got, and every one was taken:
    # a phone that dropped its connection without close_notify still has a resumable session
    assert report["resume"]["resumed"] == 12
    assert report["full"]["resumed"] == 0  # wrk's case: a full handshake each
    assert report["plain"]["resumed"] == 0 and report["plain"]["handshake"] is None
    md = (tmp_path / "resume" / "storm.md").read_text()
    assert "phones in C (each offering its own last session ticket)" in md
    assert "The mail server was bench/mailhost.c (C)" in md
    assert report["resume"]["options"]["backend"] == "c"
    assert report["full"]["options"]["backend"] == "demo"
    assert "the C phones" in md  # their CPU, beside the gateway's


class _ClosesFirst(asyncio.Protocol):
    """A server that closes each request's first connection unanswered and
    keeps the second open (a phone's Ping, held); ``all_held`` is set once
    every one of ``want`` requests came a second time."""

    def __init__(self, seen: set[bytes], held: set[bytes], want: int, all_held: asyncio.Event):
        self.seen, self.held, self.want, self.all_held = seen, held, want, all_held
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if data not in self.seen:
            self.seen.add(data)
            self.transport.close()
            return
        self.held.add(data)
        if len(self.held) == self.want:
            self.all_held.set()


async def test_a_phone_closed_before_an_answer_tries_again(tmp_path: Path) -> None:
    _require_cc()
    requests = [f"GET /{i} HTTP/1.1\r\nHost: x\r\n\r\n" for i in range(5)]
    seen: set[bytes] = set()
    held: set[bytes] = set()
    all_held = asyncio.Event()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _ClosesFirst(seen, held, len(requests), all_held), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, cwd=ROOT,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    try:
        child.stdin.write(json.dumps([port, requests, str(tmp_path)]).encode() + b"\n")
        await child.stdin.drain()
        json.loads(await asyncio.wait_for(child.stdout.readline(), 60))  # all sent once
        await asyncio.wait_for(all_held.wait(), 30)  # each sent again, 0.5-1.5 s later
        child.stdin.write(b"stop\n")
        await child.stdin.drain()
        result = json.loads(await asyncio.wait_for(child.stdout.readline(), 30))
        assert await asyncio.wait_for(child.wait(), 30) == 0
    finally:
        if child.returncode is None:
            child.kill()
        server.close()
    assert held == seen == {r.encode() for r in requests}
    assert result["sent"] == 5 and result["retries"] == 5
    assert result["errors"] == {"closed before an answer": 5}
