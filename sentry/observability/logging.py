"""structlog configured once, JSON by default, with secrets removed.

Every event passes ``redact_secrets`` last before rendering: values under keys
that can carry credentials (Authorization, passwords, tokens, cookies) are
replaced, at any nesting depth, and a Basic/Bearer credential that slipped into
a free-text value is masked too. Request context (request id, command, device,
user) is bound once per request in contextvars by the proxy's middleware.

A log file is written through ``LogFile``, which ``reopen`` swaps for a fresh
handle on the same path (SIGHUP after logrotate moved the old file away); the
file is created with mode 0600 (it holds user names and DeviceIds).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import threading
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, TextIO

import structlog

from sentry.settings import LoggingSettings

__all__ = ["REDACTED", "LogFile", "configure_logging", "redact_secrets"]

REDACTED = "[redacted]"
_SECRET_KEYS = re.compile(
    r"authorization|password|passwd|secret|token|cookie|credential|api[-_]?key", re.I
)
_CREDENTIAL_IN_TEXT = re.compile(r"\b(Basic|Bearer)\s+[A-Za-z0-9+/=._~-]+", re.I)


@functools.lru_cache(maxsize=4096)
def _secret_key(key: str) -> bool:
    return _SECRET_KEYS.search(key) is not None


def _scrub_text(value: str) -> str:
    lowered = value.lower()  # cheap pre-check: most values carry no credential
    if "basic" not in lowered and "bearer" not in lowered:
        return value
    return _CREDENTIAL_IN_TEXT.sub(lambda m: f"{m.group(1)} {REDACTED}", value)


def _scrub(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return _scrub_text(value)
    if depth > 8 or not isinstance(value, dict | list | tuple):
        return value
    if isinstance(value, dict):
        return {
            k: REDACTED if isinstance(k, str) and _secret_key(k) else _scrub(v, depth + 1)
            for k, v in value.items()
        }
    return type(value)(_scrub(v, depth + 1) for v in value)


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: remove credentials from every field of the event."""
    for key, value in event_dict.items():
        if _secret_key(key):
            event_dict[key] = REDACTED
        elif isinstance(value, str):
            event_dict[key] = _scrub_text(value)
        elif isinstance(value, dict | list | tuple):
            event_dict[key] = _scrub(value)
    return event_dict


class LogFile:
    """An append-only log file that can be reopened in place (after rotation).

    structlog and the stdlib handler write to this object; ``reopen`` swaps
    the handle under a lock, so no line is split or lost."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._fh = self._open()

    def _open(self) -> TextIO:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return os.fdopen(fd, "a", encoding="utf-8", buffering=1)

    def write(self, text: str) -> int:
        with self._lock:
            return self._fh.write(text)

    def flush(self) -> None:
        with self._lock:
            self._fh.flush()

    def reopen(self) -> None:
        """Open the path again (a new file if it was moved away), then close the old handle."""
        new = self._open()
        with self._lock:
            old, self._fh = self._fh, new
        old.close()

    def close(self) -> None:
        with self._lock:
            self._fh.close()


def configure_logging(settings: LoggingSettings, stream: TextIO | None = None) -> LogFile | None:
    """Configure structlog (and stdlib logging, for aiohttp's own messages).

    Returns the ``LogFile`` when logs go to ``settings.file`` (reopen it on
    SIGHUP), else None. Opening the file may raise ``OSError``."""
    level = getattr(logging, settings.level.upper())
    log_file = LogFile(settings.file) if settings.file and stream is None else None
    out: Any = stream or log_file or sys.stdout
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if settings.format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(level, logging.WARNING), stream=out, force=True)
    return log_file
