"""The load generator: ``python -m bench.loadgen``, driven over stdin/stdout.

Approach. The bench starts one or more of these processes, so that the load
is generated outside the server under test, and talks to each in JSON lines:
the first stdin line is the job, later ones are commands (``{"cmd": "go"}``,
``{"cmd": "stop"}``); every stdout line is an event (``ready``, ``result``,
...). The bench reads the servers' CPU counters between ``go`` and
``result``, so a window measures exactly the generated load.

Three jobs:

* ``mix`` (throughput): ``level`` keep-alive connections, each a worker that
  takes the next session from a shared queue, sends the rest of its cycle
  (``eas_mix``) one request after the other, as fast as answers come (closed
  loop), and puts it back. Every session is at most once in flight, so its
  SyncKey chain holds, and at any moment the workers are at different steps,
  so any window sees the whole mix. Per level: connect, warm up (the first
  level runs every session through one whole cycle and checks each answer's
  status), ``ready``, wait for ``go``, run ``duration`` seconds or
  ``max_requests``, write the latencies to ``<out>-c<level>.lat`` (float64
  seconds) and ``.cmd`` (cycle step, one byte), report ``result``.
* ``hold`` (held Pings, block propagation): optionally prime every
  association with one FolderSync (so the gateway knows them before memory is
  measured), ``primed``, wait for ``go``, open one connection per session at
  ``ramp_rate`` per second (source addresses rotated over ``local_hosts``)
  and send its Ping, ``sent`` once all are out, then wait for every answer
  until ``deadline`` seconds after the last send or a ``stop`` command, and
  write per-session send/answer times (``time.monotonic``, shared by all
  processes of the machine), HTTP status and Ping Status to ``out`` (JSON).
  A ``storm`` command meanwhile (reconnect storm): every held connection is
  dropped at once and every session opens a new connection (a new TLS
  handshake) and sends its Ping again, all at once, no ramp, trying again
  after 0.5-1.5 s when a connection fails or is closed unanswered, as a phone
  does; ``stormed`` at once, ``result`` (at ``stop``) counts the retries.
  A ``drop`` command drops every held connection and opens none
  (``dropped``): the storm bench's wrk reconnects them. With ``"ramp":
  false`` the job primes and opens nothing (``sent`` at once): the storm
  bench's C phones (``bench/phones.c``) hold the Pings.
* ``handshakes`` (the TLS handshake alone): ``count`` connections opened
  (``concurrency`` at a time) and closed without a request; ``result`` with
  the seconds taken. The bench reads the gateway's CPU around it: the cost of
  a handshake apart from the Ping that follows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import threading
import time
from array import array
from collections import Counter, deque
from pathlib import Path
from typing import Any

from bench.eas_mix import (
    CYCLE,
    EXPECTED_STATUS,
    Session,
    SessionRequests,
    held_ping,
    make_bodies,
    sync_key_of,
)
from bench.httpclient import Connection, HttpError, ResumingContext, client_ssl_context
from bench.proc import raise_nofile
from sentry.eas.errors import EasError
from sentry.eas.wbxml import decode

__all__ = ["main"]


class Channel:
    """Commands from stdin (read by a thread), events to stdout."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._loop = loop
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in sys.stdin:
            if line.strip():
                self._loop.call_soon_threadsafe(self.queue.put_nowait, json.loads(line))
        self._loop.call_soon_threadsafe(self.queue.put_nowait, {"cmd": "stop", "eof": True})

    @staticmethod
    def emit(event: str, **fields: Any) -> None:
        sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
        sys.stdout.flush()

    async def expect(self, command: str) -> dict[str, Any]:
        message = await self.queue.get()
        if message.get("cmd") != command:
            raise RuntimeError(f"expected {command!r}, got {message!r}")
        return message


def status_at(body: bytes, path: tuple[str, ...] = ("Status",)) -> int | None:
    """The Status at ``path`` under the root of a WBXML answer (-1: not WBXML)."""
    if not body:
        return None
    try:
        node = decode(body).find_path(*path)
    except EasError:
        return -1
    text = None if node is None else node.text
    return int(text) if text and text.isdigit() else None


# -- mix ---------------------------------------------------------------------------


class Mix:
    """Closed-loop workers over a queue of sessions (see the module comment)."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.job = job
        self.host, self.port = job["host"], int(job["port"])
        self.tls = client_ssl_context() if job.get("tls") else None
        bodies = make_bodies(int(job["heartbeat"]))
        sessions = [Session(*s) for s in job["sessions"]]
        self.requests = [SessionRequests(s, f"{self.host}:{self.port}", bodies) for s in sessions]
        self.steps = [0] * len(sessions)
        self.keys = ["0"] * len(sessions)
        self.queue: deque[int] = deque(range(len(sessions)))
        self._staggering: deque[int] = deque(range(len(sessions)))
        self.record = False
        self.verify = False
        self.stop_at = 0.0
        self.limit = 0
        self.done = 0
        self.lat = array("d")
        self.cmd = array("B")
        self.statuses: Counter[int] = Counter()
        self.failures: Counter[str] = Counter()

    async def connect(self, level: int) -> list[Connection]:
        return list(
            await asyncio.gather(
                *(Connection.open(self.host, self.port, tls=self.tls) for _ in range(level))
            )
        )

    async def one(self, conn: Connection, idx: int) -> tuple[Connection, bool]:
        """Send session ``idx``'s next request on ``conn``; (connection, answered)."""
        step = self.steps[idx]
        data = self.requests[idx].request(step, self.keys[idx])
        started = time.perf_counter()
        try:
            if conn.closed:
                conn = await Connection.open(self.host, self.port, tls=self.tls)
            status, body = await conn.request(data)
        except (HttpError, OSError) as exc:
            self.failures[type(exc).__name__] += 1
            conn.close()
            return conn, False
        elapsed = time.perf_counter() - started
        self.statuses[status] += 1
        if step == 0:
            self.keys[idx] = sync_key_of(body)
        if self.verify:
            self._check(step, status, body)
        self.steps[idx] = (step + 1) % len(CYCLE)
        if self.record:
            self.lat.append(elapsed)
            self.cmd.append(step)
        self.done += 1
        return conn, True

    def _check(self, step: int, status: int, body: bytes) -> None:
        where = EXPECTED_STATUS[step]
        path, expected = where if where is not None else ((), None)
        got = status_at(body, path) if status == 200 and path else None
        if status != 200 or got != expected:
            self.failures[f"{CYCLE[step]}: HTTP {status}, Status {got}, expected {expected}"] += 1

    def running(self) -> bool:
        return time.monotonic() < self.stop_at and self.done < self.limit

    async def worker(self, conn: Connection) -> Connection:
        """Take a device, run the rest of its cycle, put it back; until time is up."""
        while self.running():
            idx = self.queue.popleft()
            try:
                while self.running():
                    conn, answered = await self.one(conn, idx)
                    if not answered or self.steps[idx] == 0:
                        break
            finally:
                self.queue.append(idx)
        return conn

    async def run(self, conns: list[Connection], seconds: float, limit: int) -> list[Connection]:
        self.stop_at = time.monotonic() + seconds
        self.done, self.limit = 0, limit
        return list(await asyncio.gather(*(self.worker(c) for c in conns)))

    async def warm_up(self, conns: list[Connection], full_cycle: bool) -> list[Connection]:
        """One whole checked cycle of every session, then stagger them; or one short second."""
        self.record = False
        if not full_cycle:
            return await self.run(conns, 1.0, 10**9)
        self.verify = True
        conns = await self.run(conns, float(self.job["warmup_timeout"]), len(self.steps) * 7)
        self.verify = False
        return list(await asyncio.gather(*(self.stagger(c) for c in conns)))

    async def stagger(self, conn: Connection) -> Connection:
        """Advance session i to step i % 7, so the connections never run in lockstep
        (all SendMails of the mix at once would queue at the backend together)."""
        while self._staggering:
            idx = self._staggering.popleft()
            while self.steps[idx] != idx % len(CYCLE):
                conn, answered = await self.one(conn, idx)
                if not answered:
                    break
        return conn


async def mix(job: dict[str, Any], chan: Channel) -> None:
    m = Mix(job)
    out = Path(job["out"])
    for i, level in enumerate(job["levels"]):
        if level > len(m.steps):
            raise ValueError(f"{level} connections need at least as many sessions")
        conns = await m.connect(level)
        conns = await m.warm_up(conns, full_cycle=i == 0)
        warm_failures = dict(m.failures)
        m.failures.clear()
        m.statuses.clear()
        chan.emit("ready", level=level, warmup_failures=warm_failures)
        await chan.expect("go")
        m.lat, m.cmd, m.record = array("d"), array("B"), True
        cpu0, t0 = time.process_time(), time.monotonic()
        conns = await m.run(conns, float(job["duration"]), int(job["max_requests"]))
        seconds, cpu = time.monotonic() - t0, time.process_time() - cpu0
        m.record = False
        base = out.with_name(f"{out.name}-c{level}")
        with base.with_suffix(".lat").open("wb") as fh:
            m.lat.tofile(fh)
        with base.with_suffix(".cmd").open("wb") as fh:
            m.cmd.tofile(fh)
        for conn in conns:
            await conn.aclose()
        chan.emit(
            "result",
            level=level,
            requests=len(m.lat),
            seconds=seconds,
            cpu_seconds=cpu,
            statuses={str(k): v for k, v in m.statuses.items()},
            failures=dict(m.failures),
            lat_file=str(base.with_suffix(".lat")),
            cmd_file=str(base.with_suffix(".cmd")),
        )
        m.failures.clear()


# -- hold --------------------------------------------------------------------------


class Hold:
    """One held Ping per session (see the module comment)."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.job = job
        self.host, self.port = job["host"], int(job["port"])
        resume = bool(job.get("resume"))
        self.tls = client_ssl_context(resume=resume) if job.get("tls") else None
        self.sessions = [Session(*s) for s in job["sessions"]]
        n = len(self.sessions)
        self.sent = [0.0] * n
        self.answered = [0.0] * n
        self.http = [0] * n
        self.ping = [0] * n
        self.errors: Counter[str] = Counter()
        self.retries = 0
        self.local_hosts: list[str | None] = list(job.get("local_hosts") or [None])

    async def prime(self) -> None:
        """One FolderSync per session over a few connections (first sight in the gateway)."""
        bodies = make_bodies(int(self.job["heartbeat"]))
        where = f"{self.host}:{self.port}"
        todo = deque(SessionRequests(s, where, bodies).static[5] for s in self.sessions)

        async def worker() -> None:
            conn = await Connection.open(self.host, self.port, tls=self.tls)
            while todo:
                status, _ = await conn.request(todo.popleft())
                if status != 200:
                    self.errors[f"prime HTTP {status}"] += 1
                if conn.closed:
                    conn = await Connection.open(self.host, self.port, tls=self.tls)
            await conn.aclose()

        await asyncio.gather(*(worker() for _ in range(min(32, len(todo)))))

    async def one(self, i: int, data: bytes, opened: list[Connection], retry: bool = False) -> None:
        """Session ``i``'s Ping on a new connection; with ``retry`` a failed
        connection or an answer that never came is tried again after 0.5-1.5 s,
        as a phone does, until it is answered (or the task is cancelled)."""
        local = self.local_hosts[i % len(self.local_hosts)]
        while True:
            try:
                conn = await Connection.open(self.host, self.port, tls=self.tls, local_host=local)
            except OSError as exc:
                self.errors[f"connect: {exc.strerror or exc}"] += 1
                if retry:
                    self.retries += 1
                    await asyncio.sleep(0.5 + random.random())
                    continue
                self.sent[i] = -1.0
                return
            opened.append(conn)
            self.sent[i] = time.monotonic()
            try:
                status, body = await conn.request(data)
                break
            except (HttpError, OSError) as exc:
                self.errors[type(exc).__name__] += 1
                if not retry:
                    return
                conn.close()
                self.retries += 1
                await asyncio.sleep(0.5 + random.random())
        self.answered[i] = time.monotonic()
        self.http[i] = status
        self.ping[i] = status_at(body) or 0
        conn.close()

    async def ramp(self, chan: Channel) -> list[asyncio.Task[None]]:
        where = f"{self.host}:{self.port}"
        heartbeat = int(self.job["heartbeat"])
        rate = float(self.job["ramp_rate"])
        opened: list[Connection] = []
        self.opened = opened
        tasks: list[asyncio.Task[None]] = []
        t0 = time.monotonic()
        if not self.job.get("ramp", True):  # primed only: another generator holds the Pings
            chan.emit("sent", seconds=0.0, connect_errors=0)
            return tasks
        for i, session in enumerate(self.sessions):
            data = held_ping(session, where, heartbeat)
            tasks.append(asyncio.ensure_future(self.one(i, data, opened)))
            delay = t0 + (i + 1) / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        while sum(1 for s in self.sent if s != 0.0) < len(self.sessions):
            await asyncio.sleep(0.01)
        chan.emit(
            "sent", seconds=time.monotonic() - t0, connect_errors=sum(s < 0 for s in self.sent)
        )
        return tasks

    def write(self) -> None:
        Path(self.job["out"]).write_text(
            json.dumps(
                {
                    "sent": self.sent,
                    "answered": self.answered,
                    "http": self.http,
                    "ping": self.ping,
                }
            )
        )


async def storm(
    h: Hold, tasks: list[asyncio.Task[None]], chan: Channel
) -> list[asyncio.Task[None]]:
    """Drop every held connection, then reconnect every session at once."""
    await _drop_all(h, tasks)
    if isinstance(h.tls, ResumingContext):
        h.tls.reused = 0  # count the storm's reconnects only
    n = len(h.sessions)
    h.sent, h.answered, h.http, h.ping = [0.0] * n, [0.0] * n, [0] * n, [0] * n
    where = f"{h.host}:{h.port}"
    heartbeat = int(h.job["heartbeat"])
    t0 = time.monotonic()
    fresh = [
        asyncio.ensure_future(h.one(i, held_ping(s, where, heartbeat), h.opened, retry=True))
        for i, s in enumerate(h.sessions)
    ]
    chan.emit("stormed", seconds=time.monotonic() - t0)
    return fresh


async def drop(h: Hold, tasks: list[asyncio.Task[None]], chan: Channel) -> list[asyncio.Task[None]]:
    """Drop every held connection and reconnect none (another generator does:
    the storm bench's wrk)."""
    t0 = time.monotonic()
    await _drop_all(h, tasks)
    chan.emit("dropped", seconds=time.monotonic() - t0)
    return []


async def _drop_all(h: Hold, tasks: list[asyncio.Task[None]]) -> None:
    """End every Ping task and close every connection it opened."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for conn in h.opened:
        conn.close()
    h.opened.clear()


async def hold(job: dict[str, Any], chan: Channel) -> None:
    h = Hold(job)
    started = time.monotonic()
    if job.get("prime", True):
        await h.prime()
    chan.emit("primed", errors=dict(h.errors), seconds=time.monotonic() - started)
    await chan.expect("go")
    tasks = await h.ramp(chan)
    while True:
        waiting = asyncio.ensure_future(
            asyncio.wait(tasks, timeout=float(job["deadline"]))
            if tasks  # after a drop: nothing to wait for but a command
            else asyncio.sleep(float(job["deadline"]))
        )
        command = asyncio.ensure_future(chan.queue.get())
        await asyncio.wait({waiting, command}, return_when=asyncio.FIRST_COMPLETED)
        if command.done() and command.result().get("cmd") == "storm":
            waiting.cancel()
            tasks = await storm(h, tasks, chan)
            continue
        if command.done() and command.result().get("cmd") == "drop":
            waiting.cancel()
            tasks = await drop(h, tasks, chan)
            continue
        command.cancel()
        break
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for conn in h.opened:
        conn.close()
    h.write()
    answered = sum(1 for a in h.answered if a)
    resumed = h.tls.reused if isinstance(h.tls, ResumingContext) else 0
    chan.emit(
        "result", answered=answered, errors=dict(h.errors), retries=h.retries, out=job["out"],
        resumed=resumed,
    )  # fmt: skip


async def handshakes(job: dict[str, Any], chan: Channel) -> None:
    tls = client_ssl_context(resume=bool(job.get("resume")))
    host, port = job["host"], int(job["port"])
    todo = int(job["count"])
    errors: Counter[str] = Counter()
    if isinstance(tls, ResumingContext):  # a session to offer: one connection's tickets
        first = await Connection.open(host, port, tls=tls)
        async with asyncio.timeout(10):
            while tls.session is None:
                await asyncio.sleep(0.01)
                tls.save(first.writer)
        await first.aclose()
    chan.emit("ready")
    await chan.expect("go")

    async def worker() -> None:
        nonlocal todo
        while todo > 0:
            todo -= 1
            try:
                conn = await Connection.open(host, port, tls=tls)
            except OSError as exc:
                errors[f"connect: {exc.strerror or exc}"] += 1
                continue
            await conn.aclose()

    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(int(job["concurrency"]))))
    resumed = tls.reused if isinstance(tls, ResumingContext) else 0
    chan.emit("result", seconds=time.monotonic() - t0, errors=dict(errors), resumed=resumed)


JOBS = {"mix": mix, "hold": hold, "handshakes": handshakes}


async def amain() -> None:
    chan = Channel(asyncio.get_running_loop())
    job = (await chan.queue.get())["job"]
    try:
        await JOBS[job["mode"]](job, chan)
    except Exception as exc:
        chan.emit("error", message=f"{type(exc).__name__}: {exc}")
        raise


def main() -> None:
    raise_nofile()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(amain())


if __name__ == "__main__":
    main()
