"""A broken log output loses lines; it never fails the code that logged them."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from prometheus_client import CollectorRegistry

from sentry.observability import Metrics
from sentry.observability.accesslog import emit
from sentry.observability.logging import configure_logging, report_log_losses
from sentry.observability.lossy import LossyStream
from sentry.settings import LoggingSettings

DEV_FULL = Path("/dev/full")


@pytest.fixture(autouse=True)
def reset() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    configure_logging(LoggingSettings(format="console"), stream=io.StringIO())
    structlog.reset_defaults()


def _readerless_pipe() -> io.TextIOWrapper:
    read_end, write_end = os.pipe()
    os.close(read_end)
    return os.fdopen(write_end, "w", encoding="utf-8")


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_events_and_library_records_to_a_vanished_reader_are_lost_quietly(
    fmt: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """stdout piped to a log collector that died: structlog's PrintLogger
    raised BrokenPipeError where the event was logged, and the standard
    library's handler printed a traceback to stderr per record."""
    out = _readerless_pipe()
    configure_logging(LoggingSettings(format=fmt), stream=out)
    for _ in range(3):
        structlog.get_logger("sentry.test").error("backend_failed", server="mx1")
        logging.getLogger("aiohttp.server").error("Error handling request")
    with contextlib.suppress(OSError):
        out.close()  # (its buffer cannot be written either)
    structlog.get_logger("sentry.test").warning("after_close")  # ValueError before
    err = capfd.readouterr().err
    assert err.count("sentry: log output failed (BrokenPipeError)") == 1, err
    assert "Traceback" not in err and "Logging error" not in err


def test_a_full_log_disk_loses_lines_until_the_file_is_reopened_elsewhere(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The log file on a full disk (/dev/full), then SIGHUP's reopen onto a
    path with room: the lines in between are lost, the next ones are written,
    and stderr says both once."""
    if not DEV_FULL.exists():
        pytest.skip("/dev/full is missing on this machine")
    log_file = configure_logging(LoggingSettings(format="json", file=str(DEV_FULL)))
    assert log_file is not None
    log = structlog.get_logger("sentry.test")
    log.error("lost_one")
    log.error("lost_two")
    log_file.path = tmp_path / "sentry.log"  # (logrotate gave the log room elsewhere)
    log_file.reopen()
    log.error("kept")
    log_file.close()
    events = [json.loads(line)["event"] for line in log_file.path.read_text().splitlines()]
    assert events == ["kept"]
    err = capfd.readouterr().err.splitlines()
    assert err[0].startswith("sentry: log output failed (OSError)"), err
    assert err[1].startswith("sentry: log output recovered ("), err
    assert len(err) == 2, err


def test_without_a_target_it_writes_to_stdout_of_the_moment(
    capsys: pytest.CaptureFixture[str],
) -> None:
    stream = LossyStream()
    assert stream.write("one\n") == 4
    stream.flush()
    assert capsys.readouterr().out == "one\n"
    assert stream.losses.count == 0


SURROGATE_AGENT = b"Phone/\xff1".decode("utf-8", "surrogateescape")  # a header's bad byte


def test_a_bad_byte_a_device_sent_is_escaped_in_a_console_line_to_a_file(tmp_path: Path) -> None:
    """A header's bytes that are not UTF-8 are kept as lone surrogates; the
    console renderer writes them raw. The file's strict UTF-8 refused them and
    lost every line written with them; now the byte is escaped."""
    path = tmp_path / "sentry.log"
    log_file = configure_logging(LoggingSettings(format="console", file=str(path)))
    assert log_file is not None
    log = structlog.get_logger("sentry.test")
    log.info("before")
    log.info("request", user_agent=SURROGATE_AGENT)
    log.info("after")
    log_file.close()
    assert log_file.losses.count == 0
    lines = path.read_text(encoding="utf-8").splitlines()
    events = ("before", "request", "after")
    assert all(event in line for event, line in zip(events, lines, strict=True))
    assert "Phone/\\udcff1" in lines[1]


def test_a_bad_byte_a_device_sent_is_escaped_on_a_strict_stream(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """stdout whose encoding refuses lone surrogates (errors="strict")."""
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="utf-8", errors="strict", write_through=True)
    configure_logging(LoggingSettings(format="console"), stream=out)
    structlog.get_logger("sentry.test").info("request", user_agent=SURROGATE_AGENT)
    logging.getLogger("aiohttp.server").warning("bad agent %s", SURROGATE_AGENT)
    text = raw.getvalue().decode("utf-8")
    assert text.count("Phone/\\udcff1") == 2, text
    assert "log output failed" not in capfd.readouterr().err


def test_losses_are_counted_into_the_metric_from_the_start() -> None:
    """``sentry run`` hands ``Metrics.log_writes_lost`` to the outputs once the
    gateway is up: what was lost before counts too, and then every loss, by
    the events' stream and by the access line's direct path alike."""
    out = _readerless_pipe()
    configure_logging(LoggingSettings(format="json"), stream=out)
    structlog.get_logger("sentry.test").error("before_the_metrics")
    metrics = Metrics(CollectorRegistry())
    report_log_losses(metrics.log_writes_lost.inc)

    def lost() -> float | None:
        return metrics.registry.get_sample_value("sentry_log_writes_lost_total")

    before = lost()
    assert before is not None and before >= 1
    emit(structlog.get_logger("sentry.access_log"), "info", "request", {"status": 200})
    assert lost() == before + 1
    logging.getLogger("aiohttp.server").error("Error handling request")
    after = lost()
    assert after is not None and after > before + 1
    with contextlib.suppress(OSError):
        out.close()
