"""Library loggers (aiohttp, asyncio) go through the same redaction and JSON
renderer as the gateway's own events: one object per line, no credential."""

from __future__ import annotations

import asyncio
import base64
import logging

import pytest
import structlog
from multidict import CIMultiDict

from sentry.observability.logging import LIBRARY_LOGGERS, REDACTED, redact_text
from sentry.observability.ratelimit import RateLimiter
from sentry.testing.logs import captured_log_output

PASSWORD = "Tr0ub4dor&3-very-secret"
CREDENTIAL = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()


def assert_clean(text: str) -> None:
    assert CREDENTIAL not in text and PASSWORD not in text


@pytest.mark.parametrize(
    "text",
    [
        f"Authorization: Basic {CREDENTIAL}",
        f"b'POST / HTTP/1.1\\nHost: a\\nAuthorization: Basic {CREDENTIAL}\\nX: 1\\n\\n'",
        f"b'Authorization: Basic {CREDENTIAL}\\x00'",
        f"<CIMultiDictProxy('Host': 'x', 'Authorization': 'Basic {CREDENTIAL}')>",
        f"{{'authorization': 'NTLM {CREDENTIAL}'}}",
        f"Got more than 100 bytes when reading: b'Bearer {CREDENTIAL}...'",
        f"Cookie: session={CREDENTIAL}; other=1",
        f"user=alice&password={PASSWORD}&x=1",
        f'{{"password": "{PASSWORD}"}}',
        f"authorization:negotiate {CREDENTIAL}",
    ],
)
def test_credentials_in_free_text_are_masked(text: str) -> None:
    out = redact_text(text)
    assert REDACTED in out
    assert_clean(out)


def test_text_without_credentials_is_unchanged() -> None:
    for text in ("FolderSync forwarded to exchange", "unexpected token in body", "basically"):
        assert redact_text(text) == text


def test_a_library_traceback_is_one_redacted_json_line() -> None:
    with captured_log_output() as log:
        try:
            raise ValueError(f"bad head:\n  b'POST / HTTP/1.1\\nAuthorization: Basic {CREDENTIAL}'")
        except ValueError:
            logging.getLogger("aiohttp.server").exception("Error handling request from %s", "peer")
    assert log.not_json() == []
    (event,) = log.events()
    assert event["logger"] == "aiohttp.server" and event["level"] == "error"
    assert event["event"] == "Error handling request from peer"
    assert "Traceback" in event["exception"] and REDACTED in event["exception"]
    assert_clean(log.text)


def test_every_library_logger_is_routed() -> None:
    with captured_log_output() as log:
        for name in LIBRARY_LOGGERS:
            logging.getLogger(name).error("from %s: Authorization: Basic %s", name, CREDENTIAL)
    assert log.not_json() == []
    assert sorted(e["logger"] for e in log.events()) == sorted(LIBRARY_LOGGERS)
    assert_clean(log.text)


async def test_the_loop_exception_handler_is_routed() -> None:
    loop = asyncio.get_running_loop()
    with captured_log_output() as log:
        loop.call_exception_handler(
            {
                "message": "socket.accept() out of system resource",
                "exception": OSError(24, "Too many open files"),
            }
        )
    assert log.not_json() == []
    (event,) = log.events()
    assert event["logger"] == "asyncio" and "Too many open files" in event["exception"]


def test_a_flood_of_one_error_is_a_few_lines_that_count_the_rest() -> None:
    with captured_log_output() as log:
        for _ in range(1000):
            logging.getLogger("asyncio").error("socket.accept() out of system resource")
    lines = log.events()
    assert 1 <= len(lines) <= 5
    assert log.not_json() == []


def test_the_gateways_own_events_are_redacted_too() -> None:
    with captured_log_output() as log:
        structlog.get_logger("sentry").info(
            "x",
            headers=CIMultiDict({"Authorization": f"Basic {CREDENTIAL}"}),
            raw=CREDENTIAL.encode(),
        )
    assert_clean(log.text.replace(repr(CREDENTIAL.encode()), ""))  # bytes under a plain key
    assert log.not_json() == []


def test_rate_limiter_counts_what_it_suppressed() -> None:
    limiter = RateLimiter(interval=10.0, burst=2)
    assert limiter.allow("k", 0.0) == (True, 0)
    assert limiter.allow("k", 0.0) == (True, 0)
    assert limiter.allow("k", 1.0) == (False, 0)
    assert limiter.allow("k", 2.0) == (False, 0)
    assert limiter.allow("other", 2.0) == (True, 0)
    assert limiter.allow("k", 12.0) == (True, 2)
    small = RateLimiter(max_keys=2)
    for key in range(10):
        small.allow(key, 0.0)
    assert len(small._buckets) == 2
