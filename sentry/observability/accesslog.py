"""The hot log lines (one per request) rendered without structlog's generic chain.

Approach. Every request ends with one access-log line. Through structlog's
bound logger it costs about 50 µs here (the lazy proxy binds a logger, the
keyword arguments are copied into an event dict, seven processors run,
``print`` writes twice), more than the policy decision and the header
hygiene together. ``configure_logging`` therefore also installs a
``FastJson`` with what it configured (level, output, added fields, the
processor list itself); ``emit`` then renders the line directly: the same
keys in the same order (the request context, the fields, ``event``,
``level``, ``timestamp``, the added fields), the same redaction
(``redact_secrets``, skipping the fields ``emit`` makes itself: the request
id, ``event``, ``level``, ``timestamp``) and the same JSON text, made by
``logging.JsonLine`` (which remembers the pieces of values that recur, and
encodes anything else with one encoder made once, not one per line as
``json.dumps`` with ``default`` makes), about two fifths of the chain's
cost (``bench/bench_logline.py``: 7.8 against 19.4 µs).

``emit`` is exact only while structlog still runs that configuration, so
it checks that the configured processor chain is the one installed (the
same list holding the same processors) and otherwise goes through the
logger as before:
``structlog.testing.capture_logs``, the console format or a test's own
configuration see every line as usual.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from . import context as logcontext
from .lossy import Losses

__all__ = ["FastJson", "emit", "install", "uninstall"]

Render = Callable[[MutableMapping[str, Any], frozenset[str]], str]
"""A line's fields (and those not to redact) -> its JSON text, redacted."""

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
# the fields emit itself makes (never a client's bytes): not run through redaction
_GENERATED = frozenset(("request_id", "event", "level", "timestamp"))


@dataclass
class FastJson:
    """What ``configure_logging`` set up for JSON output."""

    processors: list[Any]  # the very list given to structlog.configure
    level: int
    out: Any  # a LogFile or a stream; None: sys.stdout at the time of writing
    renderer: Callable[[Callable[[Any], str]], Render]  # JsonLine: made with the encoder
    fields: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    gathers: bool = False  # ``out`` is a LogFile (writes lines whole, in order, itself)
    losses: Losses = field(default_factory=Losses)  # what ``out`` refused (lossy.py)

    def __post_init__(self) -> None:
        self._chain = list(self.processors)  # a copy: capture_logs edits the list in place
        # what json.dumps(line, default=_fallback) builds anew for every call
        self.encode = json.JSONEncoder(default=_fallback).encode
        self.render = self.renderer(self.encode)

    def line_text(self, line: MutableMapping[str, Any]) -> str:
        """The line's JSON text and its newline."""
        return self.render(line, _GENERATED) + "\n"

    def current(self) -> bool:
        """Whether structlog still runs exactly the chain installed (a test's
        ``capture_logs`` edits the same list in place; a new ``configure``
        gives another list)."""
        processors = structlog.get_config()["processors"]
        # list == list: item by item in C, an item the same object at once
        # (processors compare by identity: functions, partials, structlog's own)
        return processors is self.processors and processors == self._chain


_installed: FastJson | None = None


def install(fast: FastJson) -> None:
    global _installed
    _installed = fast


def uninstall() -> None:
    global _installed
    _installed = None


def emit(
    logger: Any,
    method: str,
    event: str,
    fields: dict[str, Any],
    *,
    context_in_fields: bool = False,
) -> None:
    """Log ``event`` with ``fields`` at ``method`` ("info", ...) on ``logger``:
    rendered here while the installed JSON configuration is structlog's,
    else through ``logger`` itself. ``fields`` becomes the line's dict.
    ``context_in_fields``: ``fields`` began as ``logcontext.fields()`` (the
    context's keys first, the caller's own after them), so merging the
    context under it again would give the same dict: it is not copied."""
    fast = _installed
    if fast is None or not fast.current():
        getattr(logger, method)(event, **fields)
        return
    if _LEVELS[method] < fast.level:
        return
    fields["event"] = event
    line = fields if context_in_fields else logcontext.merge(None, method, fields)
    line["level"] = method
    line["timestamp"] = _timestamp()
    for key, value in fast.fields.items():
        line.setdefault(key, value)
    if fast.gathers:  # a LogFile: it keeps lines whole and in order, and writes them itself
        if _settled(line):  # rendered when written, with the lines beside it (logfile.py)
            fast.out.gather_line(fast.line_text, line)
        else:
            fast.out.gather(fast.line_text(line))  # within logging.flush_ms
        return
    text = fast.line_text(line)
    out = fast.out if fast.out is not None else sys.stdout
    # A stream that is gone (a pipe whose reader died, a full disk, a closed
    # file) loses the line, not the request: the backend has already acted on
    # it, and an error now would answer the device 500 for a mail it sent.
    with fast.lock:
        if fast.losses.write(out.write, text):
            fast.losses.flush(out.flush)


_SETTLED = frozenset((str, int, float, bool, type(None), logcontext.Strs)).issuperset


def _settled(line: MutableMapping[str, Any]) -> bool:
    """Whether nothing can change the line's values before it is rendered
    later, and rendering them runs no code but the renderer's: each a str, a
    number, a boolean, None or a ``Strs`` (strs only, checked when made). The
    exact types, in one pass in C: a subclass, a list or a tuple could hold
    anything (a tuple's items would take a second pass, as dear again)."""
    return _SETTLED(map(type, line.values()))


_stamp = (-1, "")  # a second (time.time()'s) and its date and time, made once a second


def _timestamp() -> str:
    """Now as structlog's ``TimeStamper(fmt="iso", utc=True)`` writes it
    (``datetime.now(UTC).isoformat()`` with ``Z`` for ``+00:00``; no fraction
    in the rare microsecond that is 0, as ``isoformat`` does), the date and
    time of the second made once a second."""
    now = time.time()
    second = int(now)
    stamp = _stamp
    if stamp[0] != second:
        stamp = _set_stamp(second)
    micro = int((now - second) * 1_000_000)
    return f"{stamp[1]}.{micro:06d}Z" if micro else f"{stamp[1]}Z"


def _set_stamp(second: int) -> tuple[int, str]:
    global _stamp
    _stamp = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return _stamp


def _fallback(value: object) -> Any:
    """What structlog's JSON renderer does with a value JSON cannot hold."""
    render = getattr(value, "__structlog__", None)
    return render() if callable(render) else repr(value)
