"""structlog configured once, JSON by default, with secrets removed from every line.

Approach. There are two sources of log lines and one way out:

* the gateway's own events go through structlog (``structlog.get_logger``);
* everything that logs through the standard library — aiohttp's server,
  access, web and client loggers, asyncio's loop exception handler ("socket
  accept out of system resources", "Task exception was never retrieved") —
  reaches the root logger, whose one handler formats each record with
  ``structlog.stdlib.ProcessorFormatter`` through the *same* tail of
  processors: the traceback becomes an ``exception`` string field, then
  ``redact_secrets`` runs, then the renderer. So a record from any library is
  one JSON object on one line, and redaction sees exception messages and
  tracebacks, not just event fields. No library message reaches the output
  any other way: ``force=True`` replaces every root handler and the library
  loggers keep none of their own.

Library records are also rate-limited per (logger, message template, level)
(``RateLimiter``): a flood of one error — a descriptor shortage repeated by
every accept — becomes a few lines per interval, each carrying how many were
``suppressed`` since the last.

``redact_secrets`` replaces values under keys that can carry credentials
(Authorization, passwords, tokens, cookies) at any nesting depth, and in
free text masks what follows an authentication scheme (Basic, Bearer, Digest,
NTLM, Negotiate), a credential header (``Authorization: …`` in a header dump
or a ``repr`` of one) or a ``password=``-style pair. A raw request head that a
parser quotes in its error message — bare LF endings, a NUL after the
credential — is therefore masked too. Request context (request id, command,
device, user) is bound per request in contextvars by one aiohttp middleware
(``sentry.proxy.handler.serve_device``) and merged into every line.

A log file is written through ``LogFile`` (``logfile.py``): lines gathered
on the event loop's thread and written together, in order, at the end of the
turn (the access line within ``logging.flush_ms``); ``close``, ``reopen``
(SIGHUP, log rotation) and the process's exit write what is gathered.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, TextIO

import structlog

from sentry.settings import LoggingSettings

from . import accesslog
from . import context as logcontext
from .accesslog import FastJson
from .logfile import LogFile
from .lossy import Losses, LossyStream
from .ratelimit import RateLimiter

__all__ = [
    "LIBRARY_LOGGERS",
    "REDACTED",
    "JsonLine",
    "LogFile",
    "RateLimitFilter",
    "configure_logging",
    "redact_fields",
    "redact_secrets",
    "redact_text",
    "report_log_losses",
]

REDACTED = "[redacted]"
LIBRARY_LOGGERS = ("aiohttp.server", "aiohttp.access", "aiohttp.web", "aiohttp.client", "asyncio")
_SECRET_KEYS = re.compile(
    r"authorization|password|passwd|secret|token|cookie|credential|api[-_]?key", re.I
)
_HINT = re.compile(
    r"basic|bearer|digest|ntlm|negotiate|authoriz|cookie|passw|secret|token|key", re.I
)
_SCHEME = re.compile(r"\b(Basic|Bearer|Digest|NTLM|Negotiate)(\s+)[^\s'\"\\,;]+", re.I)
_HEADER = re.compile(
    r"\b((?:proxy-)?authorization|(?:set-)?cookie|x-api-key)(['\"]?\s*:\s*['\"]?)[^\r\n'\"\\]+",
    re.I,
)
_PAIR = re.compile(
    r"\b(password|passwd|pwd|secret|token|access_token|refresh_token|api[-_]?key)"
    r"(=|['\"]?\s*:\s*['\"])[^&\s'\"\\,;]+",
    re.I,
)


@functools.lru_cache(maxsize=4096)
def _secret_key(key: str) -> bool:
    return _SECRET_KEYS.search(key) is not None


_HINT_WORDS = _HINT.pattern.split("|")


def redact_text(value: str) -> str:
    """``value`` with every credential-looking part masked."""
    if len(value) <= _SHORT:  # field values: the same few thousand again and again
        return _redact_short(value)
    return _redact(value)


def _hinted(value: str) -> bool:
    """Whether ``value`` holds a hint word (``_HINT``) in any case: the cheap
    pre-check, since most values carry no credential. ASCII text (nearly all)
    is lowered and searched word by word, 3-7x faster than the
    case-insensitive regex; other text keeps the regex, whose Unicode case
    folding (the long s for "s", the Kelvin sign for "k") lowering would miss."""
    if value.isascii():
        low = value.lower()
        return any(word in low for word in _HINT_WORDS)
    return _HINT.search(value) is not None


def _redact(value: str) -> str:
    if not _hinted(value):
        return value
    value = _HEADER.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", value)
    value = _SCHEME.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", value)
    return _PAIR.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", value)


_SHORT = 128
_CLEAN: dict[str, None] = {}  # short values known to hold nothing to mask
_CLEAN_MAX = 8192


def _redact_short(value: str) -> str:
    """``_redact`` for a short value, remembering the clean ones (command
    names, decisions, DeviceIds, users: the same few thousand again and
    again). A value that had something masked is never remembered: the
    cache holds no credential."""
    if value in _CLEAN:
        return value
    clean = _redact(value)
    if clean is value:
        if len(_CLEAN) >= _CLEAN_MAX:
            _CLEAN.clear()
        _CLEAN[value] = None
    return clean


_PLAIN = (int, float, bool, type(None))
_PLAIN_TYPES = frozenset(_PLAIN)


def _scrub(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, _PLAIN):
        return value
    if depth > 8:
        return REDACTED
    if isinstance(value, Mapping):  # dict, CIMultiDict, headers proxies
        return {
            str(k): REDACTED if _secret_key(str(k)) else _scrub(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(v, depth + 1) for v in value]
    return redact_text(repr(value))  # bytes, exceptions, any object: as the renderer would show it


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: remove credentials from every field of the event."""
    return redact_fields(event_dict)


_EMPTY = (list, tuple, dict, logcontext.Strs)  # written "[]" or "{}" when empty


def redact_fields(
    event_dict: MutableMapping[str, Any], generated: frozenset[str] = frozenset()
) -> MutableMapping[str, Any]:
    """``redact_secrets`` itself; the fields named in ``generated`` are skipped:
    the caller made their values itself, nothing a client sent is in them
    (the access line's request id and timestamp, ``accesslog.emit``)."""
    for key, value in event_dict.items():
        if key in generated:
            continue
        kind = type(value)
        if _secret_key(key):
            event_dict[key] = REDACTED
        elif kind is str:  # the common case first, without the calls redact_text adds
            if value in _CLEAN:  # _redact_short's memory, asked here without the call
                continue
            clean = _redact_short(value) if len(value) <= _SHORT else _redact(value)
            if clean is not value:
                event_dict[key] = clean
        elif kind in _PLAIN_TYPES or (kind in _EMPTY and not value):
            continue
        elif isinstance(value, str):
            event_dict[key] = redact_text(value)
        elif not isinstance(value, _PLAIN) and key != "exc_info":
            event_dict[key] = _scrub(value)
    return event_dict


_encode_str = json.encoder.encode_basestring_ascii  # what json.dumps does to a str (C)
_REDACTED_JSON = _encode_str(REDACTED)
_PIECES_MAX = 8192
_KEYS_MAX = 1024


class JsonLine:
    """``encode(redact_fields(line, generated))``, the same text, for lines like
    the access line (``accesslog.emit``).

    Why. Redacting then encoding the access line's twenty-odd fields was a
    tenth of the gateway's CPU per request at 4 connections with TLS (an A/B
    run without the two, ``bench/README.md``), yet most of its values recur
    line after line (the command, the decision, the pool, DeviceIds, users).

    Approach. A line is the JSON object of its fields' pieces (``"key":
    value``, joined as ``json.dumps`` joins them). A str value's piece is
    remembered per key and value once the value is known clean (short, under
    a key that is not a secret's, unchanged by redaction), so a value seen
    before costs one lookup. Numbers, booleans, None and empty containers
    are written here as ``json`` writes them (a secret's key makes them
    ``[redacted]``). Anything else (a list with items, a dict, bytes, an
    object) takes the general path for its field alone: its one-field dict
    through ``redact_fields`` and ``encode``, which is what that field
    would have been (a key that is not a str raises TypeError, as
    ``redact_fields`` does: lines are made of keyword arguments). Nothing a
    client sent under a secret's key or with a credential in it is
    remembered (the memory holds only clean values); the memory is bounded
    (cleared when full).
    """

    def __init__(self, encode: Callable[[Any], str]) -> None:
        self._encode = encode  # a JSONEncoder's encode (its fallback for odd values)
        self._keys: dict[str, tuple[str, bool]] = {}  # key: ('"key": ', a secret's key)
        self._pieces: dict[str, dict[str, str]] = {}  # key: {clean value: piece}
        self._count = 0

    def __call__(self, line: MutableMapping[str, Any], generated: frozenset[str]) -> str:
        return "{" + ", ".join(self._pieces_of(line, generated)) + "}"

    def _pieces_of(self, line: MutableMapping[str, Any], generated: frozenset[str]) -> list[str]:
        out: list[str] = []
        keys, pieces = self._keys, self._pieces
        for key, value in line.items():
            kind = type(value)
            if kind is str:
                known = pieces.get(key)
                piece = known.get(value) if known is not None else None
                if piece is None:
                    piece = self._str_piece(key, value, key in generated)
            elif kind in _PLAIN_TYPES or (kind in _EMPTY and not value):
                prefix, secret = keys.get(key) or self._key(key)
                if secret and key not in generated:
                    piece = prefix + _REDACTED_JSON
                else:
                    piece = prefix + _literal(value)
            else:
                piece = self._encode(redact_fields({key: value}, generated))[1:-1]
            out.append(piece)
        return out

    def _key(self, key: str) -> tuple[str, bool]:
        if len(self._keys) >= _KEYS_MAX:
            self._keys.clear()
        entry = self._keys[key] = (_encode_str(key) + ": ", _secret_key(key))
        return entry

    def _str_piece(self, key: str, value: str, generated: bool) -> str:
        prefix, secret = self._keys.get(key) or self._key(key)
        if generated:  # made by the caller (a request id, a time): unique, not remembered
            return prefix + _encode_str(value)
        if secret:
            return prefix + _REDACTED_JSON
        clean = redact_text(value)
        piece = prefix + _encode_str(clean)
        if clean is value and len(value) <= _SHORT:
            if self._count >= _PIECES_MAX:
                self._pieces.clear()
                self._count = 0
            self._pieces.setdefault(key, {})[value] = piece
            self._count += 1
        return piece


def _literal(value: Any) -> str:
    """``json.dumps`` of a number, a boolean, None or an empty list or dict."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    kind = type(value)
    if kind is float:
        if value != value:
            return "NaN"
        if value in (_INF, -_INF):
            return "Infinity" if value > 0 else "-Infinity"
        return float.__repr__(value)
    if kind is int:
        return int.__repr__(value)
    return "{}" if kind is dict else "[]"


_INF = float("inf")


class RateLimitFilter(logging.Filter):
    """Lets each (logger, template, level) through ``burst`` times, then once
    per ``interval`` seconds; the record let through carries ``suppressed``."""

    def __init__(self, interval: float = 10.0, burst: int = 5) -> None:
        super().__init__()
        self._limiter = RateLimiter(interval, burst)

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg)[:200], record.levelno)
        allowed, suppressed = self._limiter.allow(key, time.monotonic())
        if suppressed:
            record.suppressed = suppressed
        return allowed


def _library_fields(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    record = event_dict.get("_record")
    suppressed = getattr(record, "suppressed", 0)
    if suppressed:
        event_dict["suppressed"] = suppressed
    return event_dict


def configure_logging(
    settings: LoggingSettings,
    stream: TextIO | None = None,
    *,
    fields: Mapping[str, Any] | None = None,
) -> LogFile | None:
    """Configure structlog, and route the standard library's loggers through
    the same redaction and renderer (see the module comment). ``fields`` are
    added to every line, library records included (``worker`` under
    ``gateway.workers``).

    Returns the ``LogFile`` when logs go to ``settings.file`` (reopen it on
    SIGHUP), else None. Opening the file may raise ``OSError``."""
    level = getattr(logging, settings.level.upper())
    log_file = (
        LogFile(settings.file, settings.flush_ms) if settings.file and stream is None else None
    )
    out: Any = stream or log_file or sys.stdout
    lossy: Any = LossyStream(None if out is sys.stdout else out)  # None: stdout of the moment
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if settings.format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    tail = [structlog.processors.format_exc_info, redact_secrets, renderer]
    if fields:
        tail.insert(0, functools.partial(_add_fields, dict(fields)))
    processors = [
        logcontext.merge,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        *tail,
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # (an output that breaks loses lines, never fails the code that logs: lossy.py)
        logger_factory=structlog.PrintLoggerFactory(lossy),
        cache_logger_on_first_use=False,
    )
    if settings.format == "json":  # the hot lines skip the generic chain (accesslog.py)
        stdout = out is sys.stdout  # PrintLogger writes to the sys.stdout of the moment
        out_ = None if stdout else out
        gathers = out_ is not None and out_ is log_file
        fast = FastJson(
            processors, level, out_, JsonLine, dict(fields or {}), gathers=gathers,
            losses=lossy.losses,  # (the same output: stdout or the given stream)
        )  # fmt: skip
        accesslog.install(fast)
    else:
        accesslog.uninstall()
    _route_standard_library(lossy, tail, max(level, logging.WARNING))
    global _outputs
    _outputs = (lossy.losses,) if log_file is None else (lossy.losses, log_file.losses)
    return log_file


_outputs: tuple[Losses, ...] = ()  # the losses of the outputs configured last


def report_log_losses(inc: Callable[[float], None]) -> None:
    """Count what the configured outputs lose, from their start, with ``inc``
    (``Metrics.log_writes_lost``'s; ``sentry run`` once the gateway is up)."""
    for losses in _outputs:
        losses.report_to(inc)


def _add_fields(
    fields: dict[str, Any], _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in fields.items():
        event.setdefault(key, value)
    return event


def _route_standard_library(out: Any, tail: list[Any], level: int) -> None:
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                _library_fields,
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
        )
    )
    handler.addFilter(RateLimitFilter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for name in LIBRARY_LOGGERS:  # nothing of theirs may bypass the root handler
        library = logging.getLogger(name)
        library.handlers.clear()
        library.propagate = True
        library.setLevel(logging.NOTSET)
