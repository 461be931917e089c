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

from sentry.observability.logging import configure_logging
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
