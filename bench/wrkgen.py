"""One request as fast as answers come, from wrk (Debian's ``wrk``): a load
generator in C, for rates where the Python ones take too much of the machine.

Approach. ``bench.hammer`` is the leanest generator in Python, and at the
gateway's refused-request rate it still takes a third of a core: on two
cores shared by the generator and the node under test, that third is what
two workers cannot have, so a 2-worker / 1-worker ratio measured with it is
bounded by the generator (the scaling target of issue #14 is 1.8x). wrk
sends the same keep-alive requests for a fraction of the CPU. ``run`` writes
a Lua script that sets the request (method, path, headers, the binary body
in decimal escapes) and prints wrk's summary as one JSON line, runs ``wrk``
with one thread and ``connections`` connections for ``duration`` seconds,
and returns what ``bench.hammer`` returns: answers by status class, the
seconds, and the generator's own CPU seconds (from ``wait4``'s resource
usage). wrk counts answers that are not 2xx or 3xx as ``status`` errors;
socket errors are reported as such.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["available", "run"]

_DONE = """
done = function(summary, latency, requests)
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, '
    .. '"status": %d, "timeout": %d}\\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout))
end
"""


def available() -> str | None:
    """The path of ``wrk``, or None when it is not installed."""
    return shutil.which("wrk")


def _lua_string(data: bytes) -> str:
    return '"' + "".join(f"\\{b}" for b in data) + '"'


def script(request: str) -> str:
    """The Lua script for one raw HTTP/1.1 request (latin-1 text, as the
    hammer's job carries it). wrk sets ``Host`` from the URL and
    ``Content-Length`` from the body itself."""
    head, _, body = request.partition("\r\n\r\n")
    line, *fields = head.split("\r\n")
    method, target, _ = line.split(" ", 2)
    lines = [
        f"wrk.method = {_lua_string(method.encode())}",
        f"wrk.path = {_lua_string(target.encode())}",
    ]
    for field in fields:
        name, _, value = field.partition(":")
        if name.lower() in ("host", "content-length"):
            continue
        lines.append(
            f"wrk.headers[{_lua_string(name.encode())}] = {_lua_string(value.strip().encode())}"
        )
    lines.append(f"wrk.body = {_lua_string(body.encode('latin-1'))}")
    return "\n".join(lines) + "\n" + _DONE


def run(
    host: str, port: int, request: str, connections: int, duration: float, work: Path
) -> dict[str, Any]:
    """Run wrk (``available()`` must have found it); the hammer's result shape."""
    wrk = available()
    if wrk is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    work.mkdir(parents=True, exist_ok=True)
    lua = work / "request.lua"
    lua.write_text(script(request), encoding="ascii")
    argv = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "-s", str(lua),
            f"http://{host}:{port}/"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{out[-2000:]}")
    summary = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    bad = summary["status"]
    return {
        "statuses": {"2xx/3xx": summary["requests"] - bad, "other": bad},
        "reconnects": summary["connect"],
        "socket_errors": summary["read"] + summary["write"] + summary["timeout"],
        "seconds": summary["duration_us"] / 1e6,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "output": out,
    }
