"""The access-log line rendered directly (accesslog.emit) is the line
structlog's configured chain renders: same keys, order, values, redaction."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from sentry.observability import context as logcontext
from sentry.observability.accesslog import emit
from sentry.observability.logging import REDACTED, configure_logging
from sentry.settings import LoggingSettings

log = structlog.get_logger("sentry.access_log")


@pytest.fixture
def reset() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    configure_logging(LoggingSettings(format="console"), stream=io.StringIO())  # uninstalls
    structlog.reset_defaults()


def _fields() -> dict[str, Any]:
    return {
        "command": "Ping",
        "device_id": "DEV1",
        "reasons": ["ADMIN_BLOCKED"],
        "password": "hunter2",
        "user_agent": "Client/1 Authorization: Basic YWxpY2U6c2VjcmV0",
        "status": 200,
        "duration_ms": 1.25,
        "revoked": True,
        "server": None,
        "odd": b"\x00bytes",
    }


@pytest.mark.usefixtures("reset")
def test_the_direct_line_is_the_structlog_line() -> None:
    out = io.StringIO()
    configure_logging(LoggingSettings(format="json"), stream=out, fields={"worker": 2})
    token = logcontext.begin(request_id="r-1", user="alice")
    try:
        emit(log, "info", "request", _fields())
        log.info("request", **_fields())
    finally:
        logcontext.end(token)
    fast, slow = (json.loads(line) for line in out.getvalue().splitlines())
    assert fast.pop("timestamp").endswith("Z") and slow.pop("timestamp").endswith("Z")
    assert list(fast) == list(slow) and fast == slow
    assert fast["request_id"] == "r-1" and fast["worker"] == 2 and fast["level"] == "info"
    assert fast["password"] == REDACTED and "YWxpY2U6c2VjcmV0" not in out.getvalue()


@pytest.mark.usefixtures("reset")
def test_below_the_level_nothing_is_written() -> None:
    out = io.StringIO()
    configure_logging(LoggingSettings(level="warning", format="json"), stream=out)
    emit(log, "info", "request", _fields())
    assert out.getvalue() == ""


@pytest.mark.usefixtures("reset")
def test_captured_and_console_lines_go_through_structlog() -> None:
    out = io.StringIO()
    configure_logging(LoggingSettings(format="json"), stream=out)
    with capture_logs() as logs:
        emit(log, "info", "request", _fields())
    assert out.getvalue() == "" and logs[0]["event"] == "request" and logs[0]["status"] == 200
    configure_logging(LoggingSettings(format="console"), stream=out)
    emit(log, "info", "request", _fields())
    assert "request" in out.getvalue() and "hunter2" not in out.getvalue()
