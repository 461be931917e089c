"""``bench/mailhost.c``: the storm bench's mail server in C answers OPTIONS and
other POSTs at once, holds a Ping until its time and then answers it, drops
a held Ping whose connection closed, refuses what it does not serve without
dying, and holds ``held-pings``' Pings behind the real gateway, one process per
address (a storm's: ``test_phones.py``).

It needs a C compiler (Debian's ``gcc``): without one these tests skip with
the reason, except under ``CI`` / ``SENTRY_REQUIRE_CC=1`` (``.ci/run``
installs it), where they fail. ``bench`` runs in a child process started in
the project's root, as the other bench tests do; the tests speak HTTP to it
over plain sockets."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentry.eas.wbxml import Element, decode, encode
from sentry.testing.backend import PROTOCOL_COMMANDS
from sentry.testing.require import missing
from sentry.testing.state import PROTOCOL_VERSIONS
from sentry.testing.wire import el, leaf

ROOT = Path(__file__).resolve().parents[2]
HOLD_S = 0.5
# An answer of its own for Settings (throughput's mix answers are such, recorded)
SETTINGS_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nX-Answer: settings\r\n\r\nsettings"
CHILD = (
    "import json, sys\n"
    f"SETTINGS = {SETTINGS_ANSWER!r}\n"
    "from pathlib import Path\n"
    "from bench import mailhost\n"
    "work, hold = json.loads(sys.stdin.readline())\n"
    "server = mailhost.start_mailhost(Path(work), hold=hold, commands={'Settings': SETTINGS})\n"
    "print(json.dumps({'port': server.port}), flush=True)\n"
    "for line in sys.stdin:\n"
    "    print(json.dumps(mailhost.counts(server)), flush=True)\n"
    "server.proc.stop()\n"
)
PING = encode(el("Ping", "Ping", leaf("Ping", "HeartbeatInterval", 480)))
FOLDER_SYNC = encode(el("FolderHierarchy", "FolderSync", leaf("FolderHierarchy", "SyncKey", "0")))


def _require_cc() -> None:
    check = "from bench import mailhost; print(mailhost.available() or '')"
    done = subprocess.run(
        [sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, check=True
    )
    reason = done.stdout.strip()
    if reason:
        missing("a C compiler", reason, "SENTRY_REQUIRE_CC")


class _Mailhost:
    def __init__(self, child: subprocess.Popen[str], port: int) -> None:
        self.child, self.port = child, port

    def counts(self) -> dict[str, int]:
        assert self.child.stdin is not None and self.child.stdout is not None
        self.child.stdin.write("counts\n")
        self.child.stdin.flush()
        counts: dict[str, int] = json.loads(self.child.stdout.readline())
        return counts

    def connect(self) -> socket.socket:
        conn = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn


@pytest.fixture(scope="module")
def mailhost(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Mailhost]:
    _require_cc()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD], cwd=ROOT, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    try:
        child.stdin.write(json.dumps([str(tmp_path_factory.mktemp("mailhost")), HOLD_S]) + "\n")
        child.stdin.flush()
        port = json.loads(child.stdout.readline())["port"]
        yield _Mailhost(child, port)
    finally:
        child.stdin.close()  # its end: the child stops the mail server
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(30)
        child.stdout.close()


def _request(method: str, body: bytes = b"", *headers: str) -> bytes:
    head = [f"{method} /Microsoft-Server-ActiveSync?Cmd=Any&User=u HTTP/1.1", "Host: backend"]
    head += [*headers, f"Content-Length: {len(body)}"] if method == "POST" else list(headers)
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _answer(conn: socket.socket, buffer: bytearray) -> tuple[int, dict[str, str], bytes]:
    """One whole HTTP response off ``conn`` (``buffer`` keeps what came after it)."""
    while b"\r\n\r\n" not in buffer:
        chunk = conn.recv(65536)
        assert chunk, f"closed before a whole head: {bytes(buffer)!r}"
        buffer += chunk
    head, _, _ = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.decode("ascii").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    need = len(head) + 4 + int(headers.get("Content-Length", "0"))
    while len(buffer) < need:
        chunk = conn.recv(65536)
        assert chunk, "closed before the whole body"
        buffer += chunk
    body = bytes(buffer[len(head) + 4 : need])
    del buffer[:need]
    return int(lines[0].split()[1]), headers, body


def _closed(conn: socket.socket) -> bool:
    """Whether the next read finds the connection closed (a reset counts)."""
    try:
        return conn.recv(65536) == b""
    except ConnectionResetError:
        return True


def test_options_and_other_posts_are_answered_at_once_as_the_demo_backend_would(
    mailhost: _Mailhost,
) -> None:
    with mailhost.connect() as conn:
        buffer = bytearray()
        # two requests in one write (pipelined): both answered, in order, on one connection
        conn.sendall(_request("OPTIONS") + _request("POST", FOLDER_SYNC))
        status, headers, body = _answer(conn, buffer)
        assert status == 200 and body == b""
        assert headers["MS-ASProtocolVersions"] == ",".join(PROTOCOL_VERSIONS)
        assert headers["MS-ASProtocolCommands"] == PROTOCOL_COMMANDS
        status, headers, body = _answer(conn, buffer)
        assert status == 200 and headers["Content-Type"] == "application/vnd.ms-sync.wbxml"
        answer = decode(body)
        assert answer.tag == "FolderSync" and answer.child_text("Status") == "1"
        assert answer.child_text("SyncKey") == "1"


def test_a_ping_is_held_until_its_time_then_answered_and_the_connection_serves_on(
    mailhost: _Mailhost,
) -> None:
    with mailhost.connect() as conn:
        buffer = bytearray()
        t0 = time.monotonic()
        # the request after the Ping waits for the Ping's answer, as HTTP/1.1 orders them
        conn.sendall(_request("POST", PING) + _request("POST", FOLDER_SYNC))
        status, _, body = _answer(conn, buffer)
        waited = time.monotonic() - t0
        ping: Element = decode(body)
        assert status == 200 and ping.tag == "Ping" and ping.child_text("Status") == "1"
        assert waited >= HOLD_S - 0.05  # held, not answered at once
        status, _, body = _answer(conn, buffer)
        assert status == 200 and decode(body).tag == "FolderSync"


def test_a_command_with_an_answer_of_its_own_gets_it_at_once_even_a_ping(
    mailhost: _Mailhost,
) -> None:
    def post(target: str, body: bytes) -> bytes:
        head = f"POST {target} HTTP/1.1\r\nHost: b\r\nContent-Length: {len(body)}\r\n\r\n"
        return head.encode() + body

    path = "/Microsoft-Server-ActiveSync"
    before = mailhost.counts()["by_command"]
    with mailhost.connect() as conn:
        buffer = bytearray()
        conn.sendall(
            post(f"{path}?Cmd=Settings&User=u", FOLDER_SYNC)
            + post(f"{path}?User=u&DeviceId=d&Cmd=Settings", PING)  # not held: its own answer
            + post(f"{path}?Cmd=SettingsX", FOLDER_SYNC)  # the name exactly, or not at all
            + post(f"{path}?User=Cmd=Settings", FOLDER_SYNC)  # a field's value is not Cmd
            + post(f"{path}?Cmd=Setting", FOLDER_SYNC)
        )
        for _ in range(2):
            status, headers, body = _answer(conn, buffer)
            assert (status, headers["X-Answer"], body) == (200, "settings", b"settings")
        for _ in range(3):
            status, headers, body = _answer(conn, buffer)
            assert "X-Answer" not in headers and decode(body).tag == "FolderSync"
    assert mailhost.counts()["by_command"] == before + 2


def test_a_held_ping_whose_connection_closes_is_dropped(mailhost: _Mailhost) -> None:
    before = mailhost.counts()
    conn = mailhost.connect()
    conn.sendall(_request("POST", PING))
    deadline = time.monotonic() + 10
    while mailhost.counts()["pings"] == before["pings"]:
        assert time.monotonic() < deadline, "the Ping was never held"
    conn.close()
    while mailhost.counts()["closed_held"] == before["closed_held"]:
        assert time.monotonic() < deadline, "the closed Ping's connection was never seen"
    assert mailhost.counts()["pings_answered"] >= before["pings_answered"]


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(_request("GET"), id="another method"),
        pytest.param(_request("POST", b"", "Transfer-Encoding: chunked"), id="chunked"),
        pytest.param(
            _request("POST").replace(b"Length: 0", b"Length: 99999999"), id="body over 1 MiB"
        ),
        pytest.param(_request("POST", b"", "X-Pad: " + "a" * 20000), id="head over 16 KiB"),
        pytest.param(b"POST / HTTP/1.1\r\n" + b"a" * 20000, id="endless head"),
    ],
)
def test_what_it_does_not_serve_gets_400_and_a_close(
    mailhost: _Mailhost, request_bytes: bytes
) -> None:
    bad = mailhost.counts()["bad"]
    with mailhost.connect() as conn:
        conn.sendall(request_bytes)
        status, headers, _ = _answer(conn, bytearray())
        assert status == 400 and headers["Connection"] == "close"
        assert _closed(conn)
    assert mailhost.counts()["bad"] == bad + 1


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(junk=st.binary(max_size=4096))
def test_any_bytes_leave_it_serving(mailhost: _Mailhost, junk: bytes) -> None:
    with mailhost.connect() as conn:
        conn.sendall(junk)
        conn.shutdown(socket.SHUT_WR)
        while not _closed(conn):  # whatever it answers, then its close
            pass
    with mailhost.connect() as conn:  # still up, still answering
        conn.sendall(_request("OPTIONS"))
        assert _answer(conn, bytearray())[0] == 200


def _bench(out: Path, scenario: str, *argv: str) -> dict[str, Any]:
    """``python -m bench scenario argv...`` into ``out``; the scenario's JSON report."""
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--out", str(out), scenario, *argv],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    report: dict[str, Any] = json.loads((out / f"{scenario}.json").read_text())
    return report


def test_throughput_on_the_mail_server_in_c_replays_the_mix_answers(tmp_path: Path) -> None:
    """``throughput --backend c``: the demo backend's answers to one cycle of the
    mix, recorded and served by ``mailhost.c``, pass the generators' checks of
    every step (warm-up) for the backend directly and through the gateway."""
    _require_cc()
    argv = ["throughput", "--devices", "8", "--levels", "2", "--duration", "0.5"]
    r = _bench(tmp_path, *argv, "--targets", "direct,gateway", "--backend", "c")
    assert r["options"]["backend"] == "c"
    assert {row["target"] for row in r["rows"]} == {"direct", "gateway"}
    assert all(row["requests"] > 0 and row["errors"] == 0 for row in r["rows"])
    assert all(not row["warmup_failures"] for row in r["rows"])
    recorded = tmp_path / "work" / "throughput" / "mailhost"
    assert sorted(p.name for p in recorded.glob("answers.cmd.*")) == [
        f"answers.cmd.{c}" for c in sorted({"FolderSync", "GetItemEstimate", "Ping",
                                            "Provision", "SendMail", "Sync"})
    ]  # fmt: skip
    assert "bench/mailhost.c serving" in (tmp_path / "throughput.md").read_text()


def test_held_pings_spread_over_one_mail_server_process_per_address(tmp_path: Path) -> None:
    """``held-pings --backend c --backend-hosts 2``: two mail server processes
    (each with a descriptor limit of its own, as 100,000 held Pings need), every
    Ping held through the gateway and answered Status 1 at its heartbeat."""
    _require_cc()
    argv = ["held-pings", "--pings", "20", "--heartbeat", "2", "--ramp-rate", "200"]
    r = _bench(tmp_path, *argv, "--backend", "c", "--backend-hosts", "2")
    assert r["options"]["backend"] == "c" and r["held"] == 20
    assert r["answered_ok"] == 20
    logs = sorted((tmp_path / "work" / "held-pings" / "backend").glob("mailhost-*"))
    assert [p.name for p in logs] == ["mailhost-0", "mailhost-1"]
    assert "one process per backend address (2)" in (tmp_path / "held-pings.md").read_text()
