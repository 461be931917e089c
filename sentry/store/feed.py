"""The change feed's format: a change list as text, and back, exactly.

Approach. A shared store (PostgreSQL) writes one feed row per ``apply``
transaction so that other gateway nodes can apply the same changes to their
own snapshots (``FeedEntry``: sequence number, writing node, time, changes).
This module is the pure part: ``encode_changes`` turns a change list into one
compact JSON document, ``decode_changes`` turns it back into equal change
values. Each change is ``[name, payload]``; the payloads reuse the store's own
codecs, so the feed and the tables cannot disagree about a value:

- associations travel as their column tuple (``association_params``) and are
  rebuilt by the same decoder the bulk load uses;
- registry and configuration values as their ``codec.dumps`` documents,
  rebuilt by ``codec.DECODERS``;
- history details and audit before/after as the JSON they are stored as.

The document carries a format number (``FORMAT``); a node that meets a newer
format or an unknown change name gets ``FeedFormatError`` and must reload
from the tables instead of guessing. Floats survive exactly (JSON writes
``repr``), as do non-finite values and every string (``ensure_ascii``: the
text is ASCII, so a NUL or any other character is an escape, never a raw
byte a database column might refuse).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from sentry.model import (
    AccessRules,
    AssociationKey,
    AuditEntry,
    Device,
    EstablishedType,
    ExchangeSetting,
    HistoryEvent,
    Label,
    Pool,
    Preferences,
    Realms,
    Routing,
    User,
)
from sentry.policy import changes as ch
from sentry.policy.audit import plain

from ._sqlite_rows import association_decoder, association_params
from .base import StoreError
from .codec import DECODERS

__all__ = [
    "FORMAT",
    "REBUILD",
    "FeedBehind",
    "FeedEntry",
    "FeedFormatError",
    "Rebuild",
    "decode_changes",
    "encode_changes",
]

FORMAT = 1
"""The feed document's format number (raise it when a payload's meaning changes)."""


class FeedFormatError(StoreError):
    """A feed row this code cannot read (newer format, unknown change, damage)."""


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """One committed ``apply``: its place in the feed, who wrote it, when, what."""

    seq: int
    node: str
    at: float
    changes: tuple[ch.Change, ...]


class FeedBehind(StoreError):
    """A guarded write found the feed ahead of the node's view: the node's
    snapshot was not the latest state, so nothing was written. ``missed``
    are the feed rows after ``view`` (oldest first), or None when they were
    already pruned (the node must reload). The node absorbs them and decides
    again (``sentry.cluster``)."""

    def __init__(self, view: int, head: int, missed: Sequence[FeedEntry] | None) -> None:
        super().__init__(f"the change feed is at {head}, this node has applied {view}")
        self.view, self.head = view, head
        self.missed = None if missed is None else tuple(missed)


Rebuild = Callable[[FeedBehind], "Sequence[ch.Change] | None"]
"""Called by a guarded write that found newer feed rows, inside its
transaction (the feed lock held, so no other row can commit meanwhile): it
applies the missed rows to the node's state and returns the change list
decided again on it (written instead, in the same transaction), or None to
give up (``FeedBehind`` is raised, nothing written)."""

REBUILD: ContextVar[Rebuild | None] = ContextVar("sentry_feed_rebuild", default=None)
"""The writer's ``Rebuild`` for the store calls it makes (``AccessState``)."""


def _doc(value: Any) -> Any:
    return plain(value)


def _key(key: AssociationKey) -> list[str]:
    return [key.device_id, key.user]


def _audit(e: AuditEntry) -> list[Any]:
    return [e.at, e.actor, e.action, e.target, e.note, plain(e.before), plain(e.after)]


_Encoder = Callable[[Any], Any]
_ENCODERS: Mapping[type[Any], tuple[str, _Encoder]] = {
    ch.PutAssociation: ("PutAssociation", lambda c: list(association_params(c.association))),
    ch.DeleteAssociation: ("DeleteAssociation", lambda c: _key(c.key)),
    ch.Touch: ("Touch", lambda c: [*_key(c.key), c.last_seen]),
    ch.PutUser: ("PutUser", lambda c: _doc(c.user)),
    ch.DeleteUser: ("DeleteUser", lambda c: c.principal),
    ch.PutDevice: ("PutDevice", lambda c: _doc(c.device)),
    ch.DeleteDevice: ("DeleteDevice", lambda c: c.device_id),
    ch.PutPool: ("PutPool", lambda c: _doc(c.pool)),
    ch.DeletePool: ("DeletePool", lambda c: c.name),
    ch.PutRouting: ("PutRouting", lambda c: _doc(c.routing)),
    ch.PutPreferences: ("PutPreferences", lambda c: _doc(c.prefs)),
    ch.PutSetting: ("PutSetting", lambda c: _doc(c.setting)),
    ch.DeleteSetting: ("DeleteSetting", lambda c: c.name),
    ch.PutLabel: ("PutLabel", lambda c: _doc(c.label)),
    ch.DeleteLabel: ("DeleteLabel", lambda c: c.name),
    ch.PutRealms: ("PutRealms", lambda c: _doc(c.realms)),
    ch.PutAccessRules: ("PutAccessRules", lambda c: _doc(c.rules)),
    ch.PutEstablished: ("PutEstablished", lambda c: _doc(c.established)),
    ch.DeleteEstablished: ("DeleteEstablished", lambda c: c.scope),
    ch.MoveHistory: ("MoveHistory", lambda c: [*_key(c.old), *_key(c.new)]),
    ch.AppendAudit: ("AppendAudit", lambda c: _audit(c.entry)),
    ch.AppendHistory: (
        "AppendHistory",
        lambda c: [*_key(c.key), c.event.at, c.event.kind, plain(c.event.detail)],
    ),
}


def encode_changes(changes: Sequence[ch.Change]) -> str:
    """The change list as one ASCII JSON document; ``TypeError`` for a non-change."""
    items = []
    for change in changes:
        entry = _ENCODERS.get(type(change))
        if entry is None:
            raise TypeError(f"not a change: {change!r}")
        name, encode = entry
        items.append([name, encode(change)])
    return json.dumps({"v": FORMAT, "changes": items}, separators=(",", ":"))


def _decoders() -> dict[str, Callable[[Any], ch.Change]]:
    row = association_decoder()

    def doc(kind: type[Any]) -> Callable[[Any], Any]:
        return DECODERS[kind]

    def key(p: Sequence[str]) -> AssociationKey:
        return AssociationKey(p[0], p[1])

    return {
        "PutAssociation": lambda p: ch.PutAssociation(row(tuple(p))),
        "DeleteAssociation": lambda p: ch.DeleteAssociation(key(p)),
        "Touch": lambda p: ch.Touch(key(p), p[2]),
        "PutUser": lambda p: ch.PutUser(doc(User)(p)),
        "DeleteUser": lambda p: ch.DeleteUser(_text(p)),
        "PutDevice": lambda p: ch.PutDevice(doc(Device)(p)),
        "DeleteDevice": lambda p: ch.DeleteDevice(_text(p)),
        "PutPool": lambda p: ch.PutPool(doc(Pool)(p)),
        "DeletePool": lambda p: ch.DeletePool(_text(p)),
        "PutRouting": lambda p: ch.PutRouting(doc(Routing)(p)),
        "PutPreferences": lambda p: ch.PutPreferences(doc(Preferences)(p)),
        "PutSetting": lambda p: ch.PutSetting(doc(ExchangeSetting)(p)),
        "DeleteSetting": lambda p: ch.DeleteSetting(_text(p)),
        "PutLabel": lambda p: ch.PutLabel(doc(Label)(p)),
        "DeleteLabel": lambda p: ch.DeleteLabel(_text(p)),
        "PutRealms": lambda p: ch.PutRealms(doc(Realms)(p)),
        "PutAccessRules": lambda p: ch.PutAccessRules(doc(AccessRules)(p)),
        "PutEstablished": lambda p: ch.PutEstablished(doc(EstablishedType)(p)),
        "DeleteEstablished": lambda p: ch.DeleteEstablished(_text(p)),
        "MoveHistory": lambda p: ch.MoveHistory(key(p[:2]), key(p[2:])),
        "AppendAudit": lambda p: ch.AppendAudit(AuditEntry(*p)),
        "AppendHistory": lambda p: ch.AppendHistory(key(p), HistoryEvent(p[2], p[3], p[4])),
    }


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def decode_changes(text: str) -> tuple[ch.Change, ...]:
    """The change list ``encode_changes`` wrote; ``FeedFormatError`` when this
    code cannot read it (the caller must not apply a part of it)."""
    try:
        doc = json.loads(text)
        version = doc["v"]
    except (ValueError, TypeError, KeyError) as exc:
        raise FeedFormatError(f"not a change-feed document: {exc}") from None
    if version != FORMAT:
        raise FeedFormatError(f"change-feed format {version!r}: this code reads {FORMAT}")
    decoders = _decoders()
    out: list[ch.Change] = []
    for i, item in enumerate(doc["changes"]):
        try:
            name, payload = item
            out.append(decoders[name](payload))
        except KeyError as exc:
            raise FeedFormatError(f"change {i}: unknown or incomplete ({exc})") from None
        except (ValueError, TypeError, IndexError) as exc:
            raise FeedFormatError(f"change {i}: cannot be read: {exc}") from None
    return tuple(out)
