"""``bench instructions``: instructions (callgrind) and system calls (strace)
per request of a real server, end to end with tiny parameters.

valgrind and strace are Debian's packages: without them this test skips with
the reason, except under ``CI`` / ``SENTRY_REQUIRE_VALGRIND=1`` (``.ci/run``
installs both), where it fails. It checks that the counts are there and
plausible, never their size against another target: that is the bench's
job. ``bench`` runs in a child process started in the project's root, as the
other bench tests do."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from sentry.testing.require import missing

ROOT = Path(__file__).resolve().parents[2]


def _require() -> None:
    for tool, package in (("valgrind", "valgrind"), ("strace", "strace")):
        if shutil.which(tool) is None:
            reason = f"{tool} is not installed (apt-get install {package})"
            missing(tool, reason, "SENTRY_REQUIRE_VALGRIND")


def test_both_counters_count_the_requests_of_a_real_tls_forwarder(tmp_path: Path) -> None:
    _require()
    argv = ["instructions", "--devices", "8", "--levels", "2", "--requests", "40"]
    argv += ["--targets", "bare-tls", "--handshakes", "10"]
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--out", str(tmp_path), *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "instructions.json").read_text())
    rows = {(r["level"], "instructions" if "instructions" in r else "syscalls"): r
            for r in report["rows"]}  # fmt: skip
    counted = rows[(2, "instructions")]
    assert counted["errors"] == 0 and counted["requests"] >= 40
    # an aiohttp forwarder's request is some 10^5..10^7 instructions, never 0
    assert 1e5 < counted["instructions_per_request"] < 1e7
    # a TLS handshake is millions of instructions, most of them inside OpenSSL
    shakes = next(r for r in report["rows"] if r["level"] == "handshakes")
    assert shakes["handshakes"] == 10 and shakes["errors"] == 0
    assert 1e5 < shakes["instructions_per_handshake"] < 1e8
    assert 0.2 < shakes["in_openssl_handshake"] < 1.0
    traced = rows[(2, "syscalls")]
    assert traced["errors"] == 0 and traced["requests"] >= 40
    # every forwarded request reads from the device and sends to the backend
    by_name = traced["syscalls_by_name_per_request"]
    assert by_name.get("sendto", 0) + by_name.get("write", 0) >= 1
    assert 2 <= traced["syscalls_per_request"] < 100
    assert "instructions per request" in (tmp_path / "instructions.md").read_text()


def test_strace_table_is_read_by_name(tmp_path: Path) -> None:
    table = tmp_path / "strace.txt"
    table.write_text(
        "% time     seconds  usecs/call     calls    errors syscall\n"
        "------ ----------- ----------- --------- --------- ----------------\n"
        " 52.10    0.001000          10       100           sendto\n"
        " 40.00    0.000800           8       100        12 recvfrom\n"
        "  7.90    0.000100           1        50           getpid\n"
        "------ ----------- ----------- --------- --------- ----------------\n"
        "100.00    0.001900           7       250        12 total\n"
    )
    child = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from bench.instructions import _strace_calls\n"
        "print(json.dumps(_strace_calls(Path(sys.argv[1]))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", child, str(table)], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"sendto": 100, "recvfrom": 100, "getpid": 50}
