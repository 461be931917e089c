"""The request-path fuzz target: raw bytes in, decisions and forwarded bytes out.

Approach. A real gateway (plain HTTP, tiny client clocks, auto-block on, one
association admin-allowed and one admin-blocked) runs in front of the strict
``RecordingBackend`` on an event loop in a background thread, logging JSON
into memory exactly as ``sentry run`` does. ``FuzzTarget.exchange`` writes one
input (``fuzz_requests.raw_requests``) on a fresh connection with a plain
blocking socket and reads until the gateway closes it, then checks what must
hold after *every* input:

* the gateway closed the connection within a bound (no stuck connection);
* no answer is a 5xx of the gateway's own making (500), nothing logged at
  error level, no ``unhandled_error`` event;
* every log line is one JSON object;

and ``FuzzTarget.final_check`` what must hold over the whole run, once the
gateway has stopped and every access-log line is written:

* the backend saw no framing violation (nothing desynchronised its stream);
* every request the backend received matches a ``request`` event whose
  decision was ``forward`` (or ``options``) for the same command, DeviceId
  and user — parsed from the *received* bytes with the gateway's own parser —
  so nothing reached it that the decision refused, and nothing was smuggled.

``run_fuzz`` is the entry point for ``python -m bench fuzz`` (a longer
profile); the test suite drives ``FuzzTarget`` with a short fixed profile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, given, seed, settings
from multidict import CIMultiDict

from sentry.eas.errors import EasError
from sentry.eas.request import parse_request
from sentry.model import AssociationKey
from sentry.policy import allow, block

from .fuzz_requests import ALLOWED, BLOCKED, EAS_PATH, raw_requests
from .gateway import DemoGateway, PoolSpec, demo_gateway
from .logs import captured_log_output
from .recording_backend import RecordedRequest, RecordingBackend, start_recording_backend

__all__ = ["FUZZ_GATEWAY", "FuzzReport", "FuzzTarget", "cast_request", "run_fuzz"]

T = TypeVar("T")
FUZZ_GATEWAY = {
    "tls": {"enabled": False},
    "connections": {
        "header_timeout_seconds": 1.0,
        "idle_timeout_seconds": 0.1,
        "body_timeout_seconds": 0.3,
        "body_min_bytes_per_second": 0,
        "send_timeout_seconds": 2,
    },
}
_STATUS = re.compile(rb"(?:^|\r\n)HTTP/1\.[01] (\d{3}) ")
CLOSE_BOUND = 10.0  # seconds: every clock is far shorter


@dataclass
class FuzzReport:
    """What a run did (the statuses seen, what was forwarded) and what broke."""

    inputs: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    forwarded: int = 0
    problems: list[str] = field(default_factory=list)
    # forwarded with two Authorization headers: decided on the first, the backend
    # may use another (duplicate Authorization -> 400 is branch authn's, issue 9)
    ambiguous: list[bytes] = field(default_factory=list)


class FuzzTarget:
    """Gateway + recording backend on a background loop (module comment)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.report = FuzzReport()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="fuzz")
        self._logged = 0
        self.backend: RecordingBackend | None = None
        self.gateway: DemoGateway | None = None
        self._gw_context: Any = None

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def __enter__(self) -> FuzzTarget:
        self._log_context = captured_log_output()
        self.log = self._log_context.__enter__()
        self._thread.start()
        self._call(self._start())
        for device, user in (ALLOWED, BLOCKED):  # first sight (refused: auto-block), then the admin
            self._send(cast_request("FolderSync", device, user))
        self._call(self._seed())
        return self

    async def _start(self) -> None:
        self.backend = await start_recording_backend()
        pools = {"exchange": PoolSpec("exchange", extra={"servers": [self.backend.url]})}
        self._gw_context = demo_gateway(
            self.root, pools, gateway=FUZZ_GATEWAY, preferences={"auto_block_unregistered": True}
        )
        self.gateway = await self._gw_context.__aenter__()

    async def _seed(self) -> None:
        assert self.gateway is not None
        state = self.gateway.gateway.state
        for key, action in ((ALLOWED, allow), (BLOCKED, block)):
            await state.apply(
                action(
                    state.snapshot, AssociationKey(*key), note="fuzz", actor="fuzz", now=time.time()
                )
            )

    def __exit__(self, *exc: object) -> None:
        try:
            if self._gw_context is not None:
                self._call(self._gw_context.__aexit__(None, None, None))
            if self.backend is not None:
                self._call(self.backend.stop())
        finally:
            with contextlib.suppress(Exception):
                self._call(_cancel_the_rest(), timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
            self._log_context.__exit__(None, None, None)

    @property
    def address(self) -> tuple[str, int]:
        assert self.gateway is not None
        host, _, port = self.gateway.url.removeprefix("http://").rpartition(":")
        return host, int(port)

    def exchange(self, data: bytes) -> list[int]:
        """Send ``data`` on a new connection, read until the gateway closes it,
        check the per-input invariants; return the statuses answered."""
        answer = self._send(data)
        statuses = [int(m) for m in _STATUS.findall(answer)]
        self.report.inputs += 1
        self.report.statuses.update(statuses)
        assert 500 not in statuses, f"500 for {data[:300]!r}"
        self._check_new_log_lines(data)
        return statuses

    def _send(self, data: bytes) -> bytes:
        chunks: list[bytes] = []
        with socket.create_connection(self.address, timeout=CLOSE_BOUND) as sock:
            with contextlib.suppress(OSError):  # the gateway may close before reading all
                sock.sendall(data)
            deadline = time.monotonic() + CLOSE_BOUND
            while time.monotonic() < deadline:
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    break
                except OSError:
                    return b"".join(chunks)
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)
        raise AssertionError(f"the gateway kept the connection open for {data[:300]!r}")

    def _check_new_log_lines(self, data: bytes) -> None:
        lines = self.log.lines()
        new, self._logged = lines[self._logged :], len(lines)
        bad = _LineCheck(new)
        assert not bad.not_json, f"non-JSON log line {bad.not_json[0]!r} for {data[:300]!r}"
        assert not bad.errors, f"error logged {bad.errors[0]!r} for {data[:300]!r}"

    def final_check(self) -> None:
        """Stop the gateway, then compare what the backend got with the decisions."""
        assert self.backend is not None and self._gw_context is not None
        self._call(self._gw_context.__aexit__(None, None, None))
        self._gw_context = None
        forwarded = Counter(
            _key(e.get("command"), e.get("device_id"), e.get("user"))
            for e in self.log.events()
            if e.get("event") == "request" and e.get("decision") in ("forward", "options")
        )
        self.report.forwarded = sum(forwarded.values())
        problems = [f"backend framing violation: {v}" for v in self.backend.violations]
        for request in self.backend.eas_requests():
            if request.header_count("Authorization") > 1:  # which one will the backend use?
                self.report.ambiguous.append(request.raw[:200])
            key = _received_key(request)
            if forwarded[key] <= 0:
                problems.append(
                    f"reached the backend without a forward decision: {request.raw[:200]!r}"
                )
            forwarded[key] -= 1
        self.report.problems += problems
        assert not problems, problems


class _LineCheck:
    """The non-JSON and error-level lines among ``lines``."""

    def __init__(self, lines: list[str]) -> None:
        self.not_json: list[str] = []
        self.errors: list[str] = []
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                self.not_json.append(line)
                continue
            if not isinstance(event, dict):
                self.not_json.append(line)
            elif (
                event.get("level") in ("error", "critical")
                or event.get("event") == "unhandled_error"
            ):
                self.errors.append(line)


async def _cancel_the_rest() -> None:
    """Cancel whatever the stopped servers left running (as ``asyncio.run`` does)."""
    current = asyncio.current_task()
    rest = [t for t in asyncio.all_tasks() if t is not current]
    for task in rest:
        task.cancel()
    await asyncio.gather(*rest, return_exceptions=True)


def cast_request(command: str, device: str, user: str) -> bytes:
    """A well-formed request of the cast (closes its connection)."""
    target = f"{EAS_PATH}?Cmd={command}&User={user}&DeviceId={device}&DeviceType=iPhone"
    return (
        f"POST {target} HTTP/1.1\r\nHost: fuzz\r\nMS-ASProtocolVersion: 14.1\r\n"
        "Authorization: Basic YWxpY2U6eA==\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    ).encode()


def _key(command: Any, device: Any, user: Any) -> tuple[str, str, str]:
    return (str(command), str(device or ""), str(user or ""))


def _received_key(request: RecordedRequest) -> tuple[str, str, str]:
    path, _, query = request.target.partition("?")
    if path.lower().rstrip("/") != EAS_PATH.lower():
        return ("unexpected path", request.target, "")
    try:  # the gateway reads headers as a CIMultiDict: the first of repeated ones
        eas = parse_request(request.method, query, CIMultiDict(request.headers))
    except EasError as exc:
        return ("unparseable", str(exc), "")
    command = eas.command.value if eas.command else "OPTIONS"
    return _key(command, eas.device_id, eas.user.key if eas.user else None)


def run_fuzz(root: Path, examples: int, *, seed_value: int | None = None) -> FuzzReport:
    """Fuzz ``examples`` inputs (Hypothesis, random unless ``seed_value``)."""
    with FuzzTarget(root) as target:
        profile = settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )

        def one(data: bytes) -> None:
            target.exchange(data)

        test: Callable[[], None] = profile(given(raw_requests())(one))
        if seed_value is not None:
            test = seed(seed_value)(test)
        try:
            test()
        finally:
            target.final_check()
        return target.report
