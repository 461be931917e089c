"""A log output that loses a line rather than fail the code that logged it.

Every line leaves through one stream: stdout (a container's log driver, a
pipe to a collector), a ``LogFile``, or a stream a caller gave. Such a
stream can break under the gateway: the pipe's reader died
(``BrokenPipeError``), the disk is full (``OSError``), the stream was closed
(``ValueError``), or refuse a character (a lone surrogate: a device's header
byte that is not UTF-8, on a strict stream; ``UnicodeEncodeError``, written
again escaped). structlog's ``PrintLogger`` lets that error rise where the
line was logged, on an error path or in the middle of a request whose backend
has already acted; the standard library's handler prints a traceback per
line to stderr. ``LossyStream`` sits under both (the access line has its own
guard, ``accesslog.emit``): a line that cannot be written is counted and
lost, the first loss and the first line that gets through again each say so
once on stderr, and logging resumes by itself when the stream does (a log
file reopened on SIGHUP, a disk with room again).
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

__all__ = ["Losses", "LossyStream"]


class Losses:
    """An output's writes and flushes, made through ``write`` and ``flush``:
    what they lose is counted, and stderr says once that the output began to
    lose lines and once that it writes again."""

    def __init__(self) -> None:
        self.count = 0  # writes lost since the output was made
        self._failing = False  # the last write failed
        self._wrote = False  # the last write went through (perhaps only to a buffer)
        self._sink: Callable[[float], None] | None = None
        self._lock = threading.Lock()

    def write(self, write: Callable[[str], object], text: str) -> bool:
        """``write(text)``; False if the output refused it (counted, lost)."""
        try:
            write(text)
        except (OSError, ValueError) as exc:
            self.lost(exc)
            return False
        self._wrote = True
        return True

    def flush(self, flush: Callable[[], object]) -> None:
        """``flush()``; one that succeeds after a write that did says the
        output is back (a write may only have reached a buffer, and a failed
        write may leave nothing to flush)."""
        try:
            flush()
        except (OSError, ValueError) as exc:
            self.lost(exc)
        else:
            if self._wrote and self._failing:
                self._recovered()

    def report_to(self, inc: Callable[[float], None]) -> None:
        """Count every loss, those before included, with ``inc`` too (a
        metric's: ``sentry_log_writes_lost_total``); it replaces any before."""
        with self._lock:
            self._sink, count = inc, self.count
        if count:
            inc(count)

    def lost(self, exc: Exception) -> None:
        with self._lock:
            self._wrote = False
            self.count += 1
            first, self._failing = not self._failing, True
            sink = self._sink
        if sink is not None:
            sink(1)
        if first:
            error = type(exc).__name__
            _say(f"sentry: log output failed ({error}): lines are lost until it recovers")

    def _recovered(self) -> None:
        with self._lock:
            if not self._failing:
                return
            self._failing = False
            count = self.count
        _say(f"sentry: log output recovered ({count} writes lost in all)")


class LossyStream:
    """``write``/``flush`` onto ``target`` (``None``: the ``sys.stdout`` of the
    moment, as ``print`` uses it), losing what cannot be written."""

    def __init__(self, target: Any | None = None) -> None:
        self.target = target
        self.losses = Losses()

    def _stream(self) -> Any:
        return sys.stdout if self.target is None else self.target

    def write(self, text: str) -> int:
        self.losses.write(functools.partial(_write_escaping, self._stream()), text)
        return len(text)

    def flush(self) -> None:
        self.losses.flush(self._stream().flush)


def _write_escaping(stream: Any, text: str) -> None:
    try:
        stream.write(text)
    except UnicodeEncodeError:  # (before anything was written)
        stream.write(_escaped(text, getattr(stream, "encoding", None) or "utf-8"))


def _escaped(text: str, encoding: str) -> str:
    """``text`` with what ``encoding`` cannot hold as backslash escapes: a lone
    surrogate (a device's header byte that is not UTF-8, kept by
    ``surrogateescape`` and written raw by the console renderer) on a strict
    stream, a non-ASCII name on an ASCII one."""
    return text.encode(encoding, "backslashreplace").decode(encoding, "replace")


def _say(message: str) -> None:
    """One line on the process's own stderr, should it still be there."""
    err: TextIO | None = sys.__stderr__
    if err is None:
        return
    try:
        err.write(message + "\n")
        err.flush()
    except (OSError, ValueError):
        pass
