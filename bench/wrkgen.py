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

from bench.proc import tree_cpu

__all__ = ["Holder", "available", "run", "write_requests"]

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


def batch_scheduled() -> None:
    """Put the calling process under ``SCHED_BATCH`` (run in the child before
    wrk starts). A batch task's wake-ups do not preempt the running task: the
    kernel lets it run at the next tick or when a core idles. A generator
    sharing the gateway's cores otherwise preempts a busy worker each time an
    answer wakes it, handles one or two sockets and sleeps again: the worker
    pays a context switch and cold caches per wake, a cost that phones on
    other machines never put on the gateway. Batched, wrk wakes less often and
    finds more answers ready each time."""
    os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


def _lua_string(data: bytes) -> str:
    return '"' + "".join(f"\\{b}" for b in data) + '"'


def script(request: str, pipeline: int = 1) -> str:
    """The Lua script for one raw HTTP/1.1 request (latin-1 text, as the
    hammer's job carries it). wrk sets ``Host`` from the URL and
    ``Content-Length`` from the body itself. ``pipeline``: that many copies
    in each write, the next batch once all are answered."""
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
    if pipeline > 1:  # wrk's own pipeline.lua: one write carries them, wrk counts each answer
        lines += [
            "local batch = nil",
            f"init = function(args) batch = string.rep(wrk.format(), {int(pipeline)}) end",
            "request = function() return batch end",
        ]
    return "\n".join(lines) + "\n" + _DONE


def run(
    host: str,
    port: int,
    request: str,
    connections: int,
    duration: float,
    work: Path,
    pipeline: int = 1,
    batch: bool = False,
) -> dict[str, Any]:
    """Run wrk (``available()`` must have found it); the hammer's result shape.
    ``pipeline``: requests per write on each connection (``script``).
    ``batch``: wrk runs under ``SCHED_BATCH`` (``batch_scheduled``)."""
    wrk = available()
    if wrk is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    work.mkdir(parents=True, exist_ok=True)
    lua = work / "request.lua"
    lua.write_text(script(request, pipeline), encoding="ascii")
    argv = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "-s", str(lua),
            f"http://{host}:{port}/"]  # fmt: skip
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=batch_scheduled if batch else None,  # (one system call before exec)
    )
    assert proc.stdout is not None
    # (Popen returns once wrk is exec'd: its policy is the one it runs under)
    sched = "batch" if os.sched_getscheduler(proc.pid) == os.SCHED_BATCH else "normal"
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
        "sched": sched,
        "output": out,
    }


# One request per connection, each connection its own (the storm's phones): the
# thread's requests are read at ``init`` from ``<prefix><tid>.bin`` (raw bytes)
# and ``.idx`` (offset and length per line), and ``request`` hands them out in
# turn. wrk calls ``request`` once more on thread 0 to check the script, so the
# turn wraps around: every request is sent once by the first connections.
_HOLD = """
local next_tid = 0
setup = function(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end

local data, offsets, lengths, n, i = nil, {}, {}, 0, 0
init = function(args)
  local f = assert(io.open(args[1] .. tid .. ".bin", "rb"))
  data = f:read("*a")
  f:close()
  for line in io.lines(args[1] .. tid .. ".idx") do
    local o, l = line:match("(%d+) (%d+)")
    n = n + 1
    offsets[n], lengths[n] = tonumber(o), tonumber(l)
  end
end

request = function()
  i = i % n + 1
  return data:sub(offsets[i] + 1, offsets[i] + lengths[i])
end
"""


def write_requests(requests: list[bytes], prefix: Path) -> None:
    """``requests`` as ``<prefix>.bin`` (the raw bytes, one after the other)
    and ``<prefix>.idx`` (a line of offset and length each): what the hold
    script reads, and ``bench/phones.c``."""
    prefix.with_name(prefix.name + ".bin").write_bytes(b"".join(requests))
    lines, at = [], 0
    for r in requests:
        lines.append(f"{at} {len(r)}\n")
        at += len(r)
    prefix.with_name(prefix.name + ".idx").write_text("".join(lines), encoding="ascii")


class Holder:
    """wrk opening one connection per request and sending it, all at once
    (no ramp), keeping every connection open while its answer is held.
    ``tls``: https. ``threads`` must divide the number of requests. Made
    ahead (the request files), started with ``start``, stopped with ``stop``
    (its connections close with the process)."""

    def __init__(
        self,
        host: str,
        port: int,
        requests: list[bytes],
        work: Path,
        *,
        tls: bool,
        threads: int = 1,
        seconds: float = 600.0,
    ) -> None:
        wrk = available()
        if wrk is None:
            raise RuntimeError("wrk is not installed (apt-get install wrk)")
        if threads < 1 or len(requests) % threads:
            raise ValueError(f"{threads} wrk threads do not divide {len(requests)} requests")
        work.mkdir(parents=True, exist_ok=True)
        per = len(requests) // threads
        for tid in range(threads):
            write_requests(requests[tid * per : (tid + 1) * per], work / f"hold{tid}")
        lua = work / "hold.lua"
        lua.write_text(_HOLD, encoding="ascii")
        scheme = "https" if tls else "http"
        argv = [wrk, f"-t{threads}", f"-c{len(requests)}", f"-d{max(1, round(seconds))}s",
                f"--timeout={max(1, round(seconds))}s", "-s", str(lua),
                f"{scheme}://{host}:{port}/", str(work / "hold")]  # fmt: skip
        self.argv = argv
        self.log = work / "wrk-hold.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start wrk: every connection at once."""
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT)

    def check_alive(self) -> None:
        assert self.proc is not None, "start() first"
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"wrk exited ({self.proc.returncode}):\n{tail}")

    def cpu(self) -> float:
        """wrk's CPU seconds so far (user and system)."""
        return 0.0 if self.proc is None else tree_cpu(self.proc.pid)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
