"""The log file: lines gathered on the event loop and written together.

Approach. A log file is written through ``LogFile``, which ``reopen`` swaps
for a fresh handle on the same path (SIGHUP after logrotate moved the old file
away); the file is created with mode 0600 (it holds user names and DeviceIds).
Lines written on the event loop's thread are gathered and written together,
in their order, with one ``write(2)``:

* a line through ``write`` (every event, warnings and errors among them)
  waits at most for the end of the current turn of the loop;
* the access line, through ``gather`` or ``gather_line``
  (``accesslog.emit``), waits at most ``flush_ms`` (``logging.flush_ms``),
  or, once ``GATHER_LINES`` of them or ``GATHER_MAX`` characters wait or a
  line through ``write`` came, for the end of the turn: at 4 connections the loop
  serves about one request a turn, and a ``write(2)`` of one line to a file
  each turn cost 3 % of the gateway's CPU (``bench/README.md``).
  ``flush_ms: 0`` writes access lines at the end of their turn too.

``gather_line`` keeps the line's dict and the function that renders it, and
renders it when it is written, with the others that wait: a line rendered
among the request's other work cost two to three times what it costs among
other lines (its code and the renderer's memory are then in the processor's
caches); ``GATHER_LINES`` bounds the pause that rendering them together
makes. The caller gives only lines whose values cannot change meanwhile
(``accesslog._settled``: str, numbers, booleans, None, tuples). A render that
fails writes a ``log_line_failed`` line in the line's place.

A line from another thread (or with no loop running) writes what is gathered,
then itself, so nothing overtakes what waits. ``close``, ``reopen``, the
process's exit (``atexit``) write what is gathered; a process killed outright
loses at most ``flush_ms`` of access lines.

A write the file refuses (a full disk) loses the lines it carried: they are
counted (``losses``) and stderr says so once, and once again when a write
gets through (the disk has room, SIGHUP reopened the path elsewhere); the
error never reaches the code that logged, nor the loop, whose exception
handler would log it to the same file (``lossy.py``).
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import threading
import weakref
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any, TextIO

from .lossy import Losses

__all__ = ["GATHER_LINES", "GATHER_MAX", "LogFile", "Render"]

GATHER_MAX = 64 * 1024
"""Gathered access lines of this many characters are written at the end of
the turn, not at the timer (a busy loop's lines leave a turn at a time)."""
GATHER_LINES = 32
"""This many lines waiting to be rendered (``gather_line``) are rendered and
written at the end of the turn: about 0.15 ms of rendering here for 32, a
pause the loop hardly notices, long enough for the renderer's code to stay
in the caches (a turn that logs more renders them all then)."""

Render = Callable[[MutableMapping[str, Any]], str]
"""A line's dict -> its text, newline included."""


class LogFile:
    """An append-only log file that can be reopened in place (after rotation).

    structlog and the stdlib handler write to this object; ``reopen`` swaps
    the handle under a lock, so no line is split or lost."""

    def __init__(self, path: str | Path, flush_ms: int = 0) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._fh = self._open()
        # gathered on _loop's thread, written by drain: texts, and lines to render
        self._pending: list[str | tuple[Render, MutableMapping[str, Any]]] = []
        self._size = 0  # characters of the texts in _pending
        self._lines = 0  # lines to render in _pending
        self._loop: asyncio.AbstractEventLoop | None = None
        self._delay = flush_ms / 1000
        self._soon: asyncio.AbstractEventLoop | None = None  # a drain is queued on this loop
        self._timer: asyncio.TimerHandle | None = None  # a drain flush_ms after a gather
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self.losses = Losses()  # lines the file refused (a full disk)
        atexit.register(_drain_at_exit, weakref.ref(self))

    def _open(self) -> TextIO:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        # a lone surrogate (a device's header byte that is not UTF-8, written raw
        # by the console renderer) is escaped, never a write refused with its batch
        return os.fdopen(fd, "a", encoding="utf-8", errors="backslashreplace", buffering=1)

    def write(self, text: str) -> int:
        """Write ``text`` (whole lines) by the end of this turn of the loop."""
        loop = _running_loop()
        with self._lock:
            if loop is not None and self._gathering(loop):
                self._pending.append(text)
                self._size += len(text)
                self._drain_at_turn_end(loop)
                return len(text)
            self._write_pending()
            self._put(text)
            return len(text)

    def gather(self, text: str) -> None:
        """Write ``text`` (an access line) within ``flush_ms`` (module comment)."""
        if self._delay <= 0:
            self.write(text)
        else:
            self._gather(text)

    def gather_line(self, render: Render, line: MutableMapping[str, Any]) -> None:
        """Write ``render(line)`` (an access line) within ``flush_ms``, rendered
        when it is written (module comment): ``line`` must not change."""
        if self._delay <= 0:
            self.write(render(line))
        else:
            self._gather((render, line))

    def _gather(self, entry: str | tuple[Render, MutableMapping[str, Any]]) -> None:
        """An access line joins the others; when enough wait, the end of this
        turn writes them (never the caller: a write that fails, a full disk,
        is the loop's drain's, not the request's that logged the line); else
        the timer will."""
        loop = _running_loop()
        with self._lock:
            if loop is None or not self._gathering(loop):
                self._write_pending()
                self._put(entry if type(entry) is str else _rendered(*entry))
                return
            self._pending.append(entry)
            if type(entry) is str:
                self._size += len(entry)
            else:
                self._lines += 1
            if self._size >= GATHER_MAX or self._lines >= GATHER_LINES:
                self._drain_at_turn_end(loop)
            elif self._timer is None or self._timer_loop is not loop:
                self._timer_loop = loop
                self._timer = loop.call_later(self._delay, self._drain_timer)

    def _drain_at_turn_end(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._soon is not loop:  # (a loop that stopped never runs its drain)
            self._soon = loop
            loop.call_soon(self._drain_soon)

    def _gathering(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether a line on ``loop`` joins the gathered ones (called under the
        lock): they belong to that loop, or there are none."""
        if not self._pending:
            self._loop = loop
            return True
        return loop is self._loop

    def flush(self) -> None:
        with self._lock:
            if not self._pending:  # else drain flushes when it writes them
                self._flush()

    def drain(self) -> None:
        """Write what was gathered (the end of a turn, the timer, exit)."""
        with self._lock:
            if self._fh.closed:
                self._pending.clear()
                self._size = self._lines = 0
                return
            self._write_pending()
            self._flush()

    def _drain_soon(self) -> None:
        self._soon = None
        self.drain()

    def _drain_timer(self) -> None:
        self._timer = None
        self.drain()

    def _write_pending(self) -> None:
        if self._pending:
            text = "".join([p if type(p) is str else _rendered(*p) for p in self._pending])
            self._pending.clear()
            self._size = self._lines = 0
            self._put(text)

    def _put(self, text: str) -> None:
        """Write to the file; what the file refuses (a full disk, a closed
        handle) is lost and counted, never raised into the code that logged
        it (``lossy.py``)."""
        self.losses.write(self._fh.write, text)

    def _flush(self) -> None:
        self.losses.flush(self._fh.flush)

    def _close(self, fh: TextIO) -> None:
        try:
            fh.close()  # (closes the descriptor even when the last flush fails)
        except (OSError, ValueError) as exc:
            self.losses.lost(exc)

    def reopen(self) -> None:
        """Open the path again (a new file if it was moved away), then close the old handle."""
        new = self._open()
        with self._lock:
            self._write_pending()  # what was gathered belongs to the old file
            old, self._fh = self._fh, new
        self._close(old)

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._write_pending()
                self._close(self._fh)


def _rendered(render: Render, line: MutableMapping[str, Any]) -> str:
    """``render(line)``; should it fail, a line saying so in its place (the
    lock is held: nothing may be logged from here)."""
    try:
        return render(line)
    except Exception as exc:
        failed = {"event": "log_line_failed", "level": "error", "error": type(exc).__name__}
        return json.dumps(failed) + "\n"


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _drain_at_exit(ref: weakref.ref[LogFile]) -> None:
    log_file = ref()
    if log_file is not None:
        log_file.drain()
