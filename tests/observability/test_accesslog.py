"""The access-log line rendered directly (accesslog.emit) is the line
structlog's configured chain renders: same keys, order, values, redaction."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from sentry.observability import accesslog
from sentry.observability import context as logcontext
from sentry.observability.accesslog import _fallback, emit
from sentry.observability.logging import (
    _PIECES_MAX,
    REDACTED,
    JsonLine,
    configure_logging,
    redact_fields,
)
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
def test_fields_that_began_as_the_context_give_the_same_line() -> None:
    """``context_in_fields`` (the handler's access line): the fields are a copy
    of the context with the request's own after them; the line is the one the
    context merged under the fields gives, keys in the same order."""
    out = io.StringIO()
    configure_logging(LoggingSettings(format="json"), stream=out, fields={"worker": 2})
    token = logcontext.begin(request_id="r-1", user="alice", status=0)
    try:
        own = {**_fields(), "user": "bob"}  # a context key overridden too
        emit(log, "info", "request", {**logcontext.fields(), **own}, context_in_fields=True)
        emit(log, "info", "request", dict(own))
        log.info("request", **own)
    finally:
        logcontext.end(token)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    for line in lines:
        assert line.pop("timestamp").endswith("Z")
    given, merged, slow = lines
    assert list(given) == list(merged) == list(slow) and given == merged == slow
    assert given["user"] == "bob" and given["request_id"] == "r-1"


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


# -- JsonLine: the line's text, piece by piece ---------------------------------------

_ENCODE = json.JSONEncoder(default=_fallback).encode


class Level(enum.IntEnum):
    HIGH = 3


_KEYS = st.sampled_from(
    ["command", "device_id", "user", "reasons", "status", "duration_ms", "password",
     "api_key", "access_token", "request_id", "timestamp", "exc_info", "odd"]
)  # fmt: skip
_SECRETISH = st.sampled_from(
    ["Basic YWxpY2U6c2VjcmV0", "Authorization: Bearer abc.def", "password=hunter2", "iPhone"]
)
_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=40)
    | st.text(min_size=120, max_size=200)  # past the short values JsonLine remembers
    | _SECRETISH
    | st.binary(max_size=8)
    | st.sampled_from([Level.HIGH, (), [], {}, float("nan"), float("inf"), float("-inf")])
    | st.lists(_SECRETISH | st.text(max_size=12), max_size=3).map(logcontext.Strs),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(_KEYS | st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@given(
    st.lists(st.dictionaries(_KEYS | st.text(max_size=8), _VALUES, max_size=8), max_size=4),
    st.sets(_KEYS, max_size=3),
)
def test_a_json_line_is_the_redacted_line_encoded(
    lines: list[dict[str, Any]], generated: set[str]
) -> None:
    """Line after line on one JsonLine (so later lines meet what earlier ones
    remembered), each text is exactly what redaction then encoding makes."""
    render, frozen = JsonLine(_ENCODE), frozenset(generated)
    for line in [*lines, *lines]:
        assert render(dict(line), frozen) == _ENCODE(redact_fields(dict(line), frozen))


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), float("-inf"), -0.0, 0.1, 1e300, True, False, None, 0, -5,
     2**70, [], {}, (), Level.HIGH, logcontext.NO_STRS, logcontext.Strs(["A", "B"])],
    ids=repr,
)  # fmt: skip
@pytest.mark.parametrize("key", ["status", "password"])
def test_every_literal_is_written_as_json_writes_it(key: str, value: Any) -> None:
    line = {key: value}
    assert JsonLine(_ENCODE)(dict(line), frozenset()) == _ENCODE(redact_fields(dict(line)))
    generated = frozenset((key,))  # a secret's name among the caller's own fields: kept
    assert JsonLine(_ENCODE)(dict(line), generated) == _ENCODE(dict(line))


@pytest.mark.parametrize(
    "value",
    ["BAD\udcff\udc80ID", 'q"uo\\te', "tab\tnl\n\x00\x1f", "Gerät-Ω-😀", "x" * 129, ""],
    ids=["lone-surrogates", "quote-backslash", "controls", "non-ascii", "long", "empty"],
)
def test_a_client_spelled_value_is_written_as_json_writes_it(value: str) -> None:
    """What a device may send as a user or DeviceId (bytes decoded with
    surrogateescape, quotes, control bytes, any script, past the remembered
    length), first seen and then remembered, as redaction then encoding."""
    render = JsonLine(_ENCODE)
    for line in ({"user_raw": value, "device_id": value}, {"user_raw": value}):
        for _ in range(2):  # the second time from memory (if remembered at all)
            assert render(dict(line), frozenset()) == _ENCODE(redact_fields(dict(line)))


@pytest.mark.parametrize("value", ["seven", 1.5, ["x"]])
def test_a_key_that_is_not_a_str_is_refused_as_redaction_refuses_it(value: Any) -> None:
    line: dict[Any, Any] = {"command": "Ping", 7: value}
    with pytest.raises(TypeError):
        redact_fields(dict(line))
    with pytest.raises(TypeError):
        JsonLine(_ENCODE)(dict(line), frozenset())


def test_json_line_remembers_no_credential_and_stays_bounded() -> None:
    render = JsonLine(_ENCODE)
    credentials = ["hunter2", "YWxpY2U6c2VjcmV0", "abc.def"]
    line = {
        "password": "hunter2",
        "user_agent": "Client/1 Authorization: Basic YWxpY2U6c2VjcmV0",
        "note": "Bearer abc.def",
        "command": "Ping",
    }
    text = render(dict(line), frozenset())
    assert not any(c in text for c in credentials) and '"command": "Ping"' in text
    memory = repr(render._pieces) + repr(render._keys)
    assert not any(c in memory for c in credentials) and "Ping" in memory
    for n in range(3 * _PIECES_MAX):  # as many DeviceIds as an attacker likes
        render({"device_id": f"D{n}"}, frozenset())
    assert render._count <= _PIECES_MAX
    assert sum(len(v) for v in render._pieces.values()) == render._count


@pytest.mark.parametrize(
    "now", [1764930000.0, 1764930000.25, 1764930000.5, 1764930059.75, 951782400.5]
)
def test_the_timestamp_is_structlogs_iso_utc_form(
    now: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As ``datetime.now(UTC).isoformat()`` with Z (TimeStamper's iso, utc),
    a whole second without a fraction as isoformat writes it; a new second
    (a leap day among them) gets its own date and time."""
    monkeypatch.setattr(accesslog.time, "time", lambda: now)
    expected = dt.datetime.fromtimestamp(now, dt.UTC).isoformat().replace("+00:00", "Z")
    assert accesslog._timestamp() == expected
    monkeypatch.setattr(accesslog.time, "time", lambda: now + 1.5)
    later = dt.datetime.fromtimestamp(now + 1.5, dt.UTC).isoformat().replace("+00:00", "Z")
    assert accesslog._timestamp() == later


@pytest.mark.usefixtures("reset")
def test_lines_to_a_log_file_are_gathered_by_it(tmp_path: Path) -> None:
    """To a file the line goes through the LogFile alone (it keeps lines
    whole and in order); both lines read back whole."""
    settings = LoggingSettings(format="json", file=str(tmp_path / "gateway.jsonl"))
    log_file = configure_logging(settings)
    assert log_file is not None and accesslog._installed is not None
    assert accesslog._installed.gathers
    emit(log, "info", "request", _fields())
    log.info("request", **_fields())
    log_file.close()
    fast, slow = (
        json.loads(line) for line in (tmp_path / "gateway.jsonl").read_text().splitlines()
    )
    assert fast.pop("timestamp").endswith("Z") and slow.pop("timestamp").endswith("Z")
    assert fast == slow


class _Str(str):
    pass


class _Number(enum.IntEnum):
    ONE = 1


@pytest.mark.parametrize(
    ("value", "settled"),
    [
        ("text", True),
        (7, True),
        (1.5, True),
        (False, True),
        (None, True),
        (logcontext.NO_STRS, True),
        (logcontext.Strs(("ADMIN_BLOCKED", "MANUAL")), True),
        ((), False),  # a tuple: its items could be anything
        (("ADMIN_BLOCKED",), False),
        ([], False),
        ({}, False),
        (b"bytes", False),
        (_Str("a str subclass"), False),
        (_Number.ONE, False),
    ],
)
def test_only_values_that_cannot_change_wait_to_be_rendered(value: Any, settled: bool) -> None:
    assert accesslog._settled({"command": "Ping", "x": value, "status": 200}) is settled


@pytest.mark.parametrize("items", [[1], ["a", b"b"], ["a", _Str("b")], [["a"]]])
def test_strs_hold_strs_only(items: list[Any]) -> None:
    with pytest.raises(TypeError):
        logcontext.Strs(items)
    assert logcontext.Strs(["a", "b"]) == ("a", "b") and not logcontext.NO_STRS
    assert repr(logcontext.Strs(["a"])) == "['a']"  # the console format shows a list, as before


def _settled_fields() -> dict[str, Any]:
    """``_fields()`` with nothing that could change: no bytes, reasons as Strs."""
    fields = _fields()
    del fields["odd"]
    fields["reasons"] = logcontext.Strs(fields["reasons"])
    return fields


@pytest.mark.usefixtures("reset")
async def test_a_settled_line_rendered_when_written_is_the_structlog_line(tmp_path: Path) -> None:
    path = tmp_path / "gateway.jsonl"
    log_file = configure_logging(LoggingSettings(format="json", file=str(path), flush_ms=60_000))
    assert log_file is not None
    emit(log, "info", "request", _settled_fields())
    assert log_file._pending and not isinstance(log_file._pending[0], str)  # not rendered yet
    log.info("request", **_settled_fields())  # ends its turn, taking the waiting line along
    await asyncio.sleep(0)
    text = path.read_text()
    assert "hunter2" not in text and "YWxpY2U6c2VjcmV0" not in text
    fast, slow = (json.loads(line) for line in text.splitlines())
    assert fast.pop("timestamp").endswith("Z") and slow.pop("timestamp").endswith("Z")
    assert fast == slow and fast["reasons"] == ["ADMIN_BLOCKED"]
    log_file.close()


@pytest.mark.usefixtures("reset")
async def test_a_line_whose_values_could_change_is_rendered_at_once(tmp_path: Path) -> None:
    path = tmp_path / "gateway.jsonl"
    log_file = configure_logging(LoggingSettings(format="json", file=str(path), flush_ms=60_000))
    assert log_file is not None
    reasons = ["ADMIN_BLOCKED"]
    emit(log, "info", "request", {"command": "Ping", "reasons": reasons})
    reasons.append("changed afterwards")
    log_file.close()
    (line,) = (json.loads(line) for line in path.read_text().splitlines())
    assert line["reasons"] == ["ADMIN_BLOCKED"]


@pytest.mark.usefixtures("reset")
def test_a_vanished_log_reader_does_not_fail_the_request() -> None:
    """Logs to a pipe whose reader is gone (a container's log driver that
    died): the access line is lost, and emit returns, so the answer the
    backend already gave still reaches the device (a SendMail not retried
    into a second mail)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    out = os.fdopen(write_end, "w", encoding="utf-8")
    configure_logging(LoggingSettings(format="json"), stream=out)
    emit(log, "info", "request", _fields())  # raised BrokenPipeError before
    with contextlib.suppress(OSError):
        out.close()  # (what its buffer holds cannot be written either)
    emit(log, "info", "request", _fields())  # a closed stream: ValueError before
