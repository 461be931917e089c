"""The gateway's rendered log output, captured for a test and restored after.

``captured_log_output`` configures logging exactly as ``sentry run`` does
(``configure_logging``: structlog JSON plus the standard library's loggers
routed through the same redaction) but into an in-memory stream, and puts
structlog's configuration and the root logger's handlers back on exit, so a
test can assert on the real lines — every one a JSON object, no password
anywhere — without leaking its configuration into the next test.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import structlog

from sentry.observability import configure_logging
from sentry.settings import LoggingSettings

__all__ = ["CapturedLog", "captured_log_output"]


class CapturedLog:
    """The captured text and its lines parsed as JSON."""

    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self) -> list[str]:
        return [line for line in self.text.split("\n") if line]

    def not_json(self) -> list[str]:
        """Lines that are not one JSON object each."""
        bad = []
        for line in self.lines():
            try:
                if not isinstance(json.loads(line), dict):
                    bad.append(line)
            except ValueError:
                bad.append(line)
        return bad

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.lines():
            try:
                parsed = json.loads(line)
            except ValueError:
                continue
            if isinstance(parsed, dict):
                out.append(parsed)
        return out


@contextmanager
def captured_log_output(
    level: Literal["debug", "info", "warning", "error"] = "info",
) -> Iterator[CapturedLog]:
    """Log as the gateway does, into memory, for the duration of the block."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, structlog.get_config())
    stream = io.StringIO()
    configure_logging(LoggingSettings(level=level, format="json"), stream=stream)
    try:
        yield CapturedLog(stream)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        structlog.configure(**saved[2])
