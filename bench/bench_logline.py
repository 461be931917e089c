"""Microseconds per access-log line: structlog's chain vs the direct renderer.

Run: ``.venv/bin/python bench/bench_logline.py``. Logging is configured as
``sentry run`` configures it (JSON, redaction, to a file in a temporary
folder); a request's context is begun as the handler begins it, then the
access line of a typical request (17 fields) is logged through structlog's
bound logger (the baseline, what every line cost before) and through
``accesslog.emit`` as the handler calls it (its fields began as the
context's) in the same run. Each figure is the best of 5 timeit repeats;
every line has a request id of its own, as in the gateway. Off the loop
each line is rendered and written at once. A third figure is ``emit`` on a
running event loop, 16 lines per turn of the loop: the log file then keeps
the lines and renders and writes them 32 at a time (``logging.flush_ms``,
``LogFile.gather_line``). The render alone is timed too: the line's dict redacted
then encoded (what ``emit`` did before) against ``logging.JsonLine`` (the
same text, from remembered pieces). And the per-request context work: structlog's
``contextvars`` (clear, five binds, read, clear) against
``sentry.observability.context`` doing the same.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

import structlog
from structlog.contextvars import bind_contextvars, clear_contextvars, get_contextvars

from sentry.observability import accesslog
from sentry.observability import context as logcontext
from sentry.observability.accesslog import _GENERATED, emit
from sentry.observability.logging import JsonLine, configure_logging, redact_fields
from sentry.settings import LoggingSettings

NUMBER = 5_000
REPEAT = 5
CONTEXT = {"request_id": "3f2a1b-1c2", "command": "Ping", "device_id": "BLK0000123",
           "user": "user0123@corp.example", "device_type": "iPhone", "version": "14.1"}  # fmt: skip
DECISION = {"auth": "basic", "decision": "forward", "reasons": [], "pool": "exchange",
            "server": "http://10.0.0.5:443", "upstream_status": 200, "bytes_out": 412}  # fmt: skip
END = {"status": 200, "duration_ms": 1.234, "client": "203.0.113.9"}
log = structlog.get_logger("sentry.access_log")


def best(fn: Any) -> float:
    return min(timeit.Timer(fn).repeat(repeat=REPEAT, number=NUMBER)) / NUMBER * 1e6


def structlog_context() -> None:
    clear_contextvars()
    bind_contextvars(**CONTEXT)
    bind_contextvars(**DECISION)
    bind_contextvars(upstream_cancelled=False)
    bind_contextvars(eas_policy="translated")
    get_contextvars()
    clear_contextvars()


def own_context() -> None:
    token = logcontext.begin(**CONTEXT)
    logcontext.note(**DECISION)
    logcontext.note(upstream_cancelled=False)
    logcontext.note(eas_policy="translated")
    logcontext.fields()
    logcontext.end(token)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log_file = configure_logging(LoggingSettings(file=str(Path(tmp) / "gateway.jsonl")))
        token = logcontext.begin(**CONTEXT)
        logcontext.note(**DECISION)
        fields = {**logcontext.fields(), **END}
        ids = (f"3f2a1b-{n:x}" for n in itertools.count(1))
        chain = best(lambda: log.info("request", **{**fields, "request_id": next(ids)}))
        direct = best(lambda: emit(log, "info", "request", {**fields, "request_id": next(ids)},
                                   context_in_fields=True))  # fmt: skip
        on_loop = asyncio.run(_on_loop(fields, ids))
        logcontext.end(token)
        if log_file is not None:
            log_file.close()
    ctx_structlog, ctx_own = best(structlog_context), best(own_context)
    redacted, pieces = _render(fields)
    print(f"access-log line and request context, best of {REPEAT} x {NUMBER:,}")
    print(f"{'':<34}{'baseline':>10}{'now':>10}{'ratio':>8}")
    print(f"{'access line (µs)':<34}{chain:>10.1f}{direct:>10.1f}{chain / direct:>7.1f}x")
    row = "same, on the loop, 16 a turn (µs)"
    print(f"{row:<34}{chain:>10.1f}{on_loop:>10.1f}{chain / on_loop:>7.1f}x")
    row = "render: redacted, encoded (µs)"
    print(f"{row:<34}{redacted:>10.2f}{pieces:>10.2f}{redacted / pieces:>7.1f}x")
    row = "request context (µs)"
    print(f"{row:<34}{ctx_structlog:>10.1f}{ctx_own:>10.1f}{ctx_structlog / ctx_own:>7.1f}x")


def _render(fields: dict[str, Any]) -> tuple[float, float]:
    """µs to render one line's dict (the access line's keys, as ``emit`` hands
    it over): redacted then encoded, as before ``JsonLine``, and by ``JsonLine``
    (its memory warm, as in a gateway that has seen these values)."""
    encode = json.JSONEncoder(default=accesslog._fallback).encode
    line = {**fields, "request_id": "3f2a1b-1c2", "event": "request", "level": "info",
            "timestamp": "2026-12-05T10:01:52.912643Z"}  # fmt: skip
    pieces = JsonLine(encode)
    assert pieces(dict(line), _GENERATED) == encode(redact_fields(dict(line), _GENERATED))
    return (
        best(lambda: encode(redact_fields(dict(line), _GENERATED))),
        best(lambda: pieces(dict(line), _GENERATED)),
    )


async def _on_loop(fields: dict[str, Any], ids: Any) -> float:
    """µs per line of ``emit`` on a running loop, 16 lines per turn (best of REPEAT)."""
    runs = []
    for _ in range(REPEAT):
        start = time.perf_counter()
        for n in range(NUMBER):
            emit(log, "info", "request", {**fields, "request_id": next(ids)},
                 context_in_fields=True)  # fmt: skip
            if n % 16 == 15:
                await asyncio.sleep(0)  # the turn ends: the file writes its lines
        await asyncio.sleep(0)
        runs.append(time.perf_counter() - start)
    return min(runs) / NUMBER * 1e6


if __name__ == "__main__":
    main()
