"""The log context of the request being served: one dict in one ContextVar.

Every line logged while a request is served carries its request id, command,
device and user, and the access-log line carries everything the handler
noted on the way (decision, reasons, pool, upstream status, ...).
structlog's own ``structlog.contextvars`` keeps one ``ContextVar`` per key:
clearing walks every key ever bound and reading or merging walks the whole
context: 26 µs per request against 3 µs for this (``bench/bench_logline.py``). This
keeps the request's fields in one dict: ``begin`` installs a fresh one for
the request (the device handler ``sentry.proxy.handler.serve_device``),
``note`` adds to it in place, ``fields`` reads it, ``merge`` is the
structlog processor that puts it on every line, and ``end`` restores what
was there before.

A task started while a request is served (a commit shielded from
cancellation) inherits the context and so shares the dict: what it notes
belongs to the request, as it should. Outside a request ``note`` starts a
dict for the current context, which lasts as long as that context does.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from contextvars import ContextVar, Token
from typing import Any

__all__ = ["NO_STRS", "Strs", "begin", "end", "fields", "merge", "note"]


class Strs(tuple[str, ...]):
    """A tuple of strs, checked when made: a list-like field that cannot
    change once noted (``accesslog._settled`` lets a line holding one wait to
    be rendered; JSON writes it as a list, as any tuple)."""

    __slots__ = ()

    def __new__(cls, items: Iterable[str] = ()) -> Strs:
        made = super().__new__(cls, items)
        for item in made:
            if type(item) is not str:
                raise TypeError(f"Strs holds str only, not {type(item).__name__}")
        return made

    def __repr__(self) -> str:  # as the list it stands for (the console format shows it)
        return repr(list(self))


NO_STRS = Strs()

_CONTEXT: ContextVar[dict[str, Any] | None] = ContextVar("sentry_log_context", default=None)


def begin(**initial: Any) -> Token[dict[str, Any] | None]:
    """A fresh context with ``initial`` fields; give the token to ``end``."""
    return _CONTEXT.set(initial)


def end(token: Token[dict[str, Any] | None]) -> None:
    """Put back the context ``begin`` replaced."""
    _CONTEXT.reset(token)


def note(**values: Any) -> None:
    """Add fields to the current context (the request's, inside one)."""
    current = _CONTEXT.get()
    if current is None:
        _CONTEXT.set(values)
    else:
        current.update(values)


def fields() -> dict[str, Any]:
    """A copy of the current context's fields."""
    current = _CONTEXT.get()
    return {} if current is None else dict(current)


def merge(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: the context's fields first, the event's own win."""
    current = _CONTEXT.get()
    if not current:
        return event_dict
    merged = dict(current)
    merged.update(event_dict)
    return merged
