"""``bench.opcodes``: a real gateway's bytecodes per request, by function,
end to end with tiny parameters (``bench`` runs in a child process started
in the project's root, as the other bench tests do). It checks that the
counts are there and name the gateway's own code, never their size."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bytecodes_per_request_of_a_real_gateway(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.opcodes", "40", "--level", "2", "--top", "60"],
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    pattern = r"bytecodes per request \(([\d,]+) requests, 2 connections\): ([\d,]+)"
    head = re.search(pattern, done.stdout)
    assert head is not None, done.stdout
    requests, per_request = (int(g.replace(",", "")) for g in head.groups())
    assert requests >= 40
    assert 1_000 < per_request < 1_000_000  # a request runs the gateway's Python code
    # the request's path through the gateway is named, function by function
    assert "sentry/proxy/handler.py" in done.stdout
    assert "sentry/eas/request.py" in done.stdout
