"""Audit helpers: validated actor/note and small JSON-ready before/after dicts.

Every admin operation ends with ``audited(...)``: the ``AppendAudit`` change
that says who did what to which target, when and why, with a small dict of
the state before and after. ``plain`` turns model values into JSON-ready
data (enums to values, sets to sorted lists, dataclasses to dicts) so the
store can write the entry as is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from enum import Enum
from typing import Any

from sentry.model import AuditEntry

from .changes import AppendAudit, Change
from .errors import ValidationError

__all__ = ["audited", "audited_change", "plain", "require_actor", "require_note"]


def require_actor(actor: str) -> str:
    """The actor, stripped; ``ValidationError`` when empty."""
    if not actor or not actor.strip():
        raise ValidationError("an admin operation needs an actor")
    return actor.strip()


def require_note(note: str) -> str:
    """The note, stripped; ``ValidationError`` when empty."""
    if not note or not note.strip():
        raise ValidationError("this admin operation needs a non-empty note")
    return note.strip()


_SCALARS = frozenset({str, int, float, bool, type(None)})


def plain(value: Any) -> Any:
    """JSON-ready data for a model value (dicts, lists, str, numbers, None)."""
    kind = type(value)
    if kind in _SCALARS:  # exact types: a StrEnum is a str but not plain
        return value
    # Fast paths for what is mostly met (audit and history details, already
    # plain when the store encodes them again): scalars are taken in place.
    if kind is dict:
        return {
            k if type(k) is str else str(k): v if type(v) in _SCALARS else plain(v)
            for k, v in value.items()
        }
    if kind is list or kind is tuple:
        return [v if type(v) in _SCALARS else plain(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = (f for f in dataclasses.fields(value) if f.init)  # derived fields are not data
        return {f.name: plain(getattr(value, f.name)) for f in fields}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, frozenset | set):  # sorted as values (dataclasses are ordered too)
        return [plain(v) for v in sorted(value)]
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    return value


def audited(
    *,
    at: float,
    actor: str,
    action: str,
    target: str,
    note: str,
    before: Any,
    after: Any,
) -> AppendAudit:
    """The audit change for one admin operation."""
    entry = AuditEntry(at, actor, action, target, note, _small(before), _small(after))
    return AppendAudit(entry)


def audited_change(
    change: Change,
    action: str,
    target: str,
    before: Any,
    after: Any,
    actor: str,
    note: str,
    now: float,
) -> tuple[Change, ...]:
    """``change`` with its audit entry, or nothing when it changes nothing
    (``before == after``): the shape of every audited admin write."""
    actor = require_actor(actor)
    if before == after:
        return ()
    entry = audited(
        at=now,
        actor=actor,
        action=action,
        target=target,
        note=note.strip(),
        before=before,
        after=after,
    )
    return (change, entry)


def _small(value: Any) -> Mapping[str, Any] | None:
    if value is None:
        return None
    data = plain(value)
    return data if isinstance(data, dict) else {"value": data}
