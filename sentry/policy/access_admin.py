"""Admin writes of the device access rules: add, move, remove (audited).

Approach. Like every admin operation, each function checks its input
against the snapshot and returns the changes: one ``PutAccessRules`` with
the whole new ordered list (the rules are one configuration value, so an
insertion or a move is one durable write and the order cannot tear) and
the audit entry. Applying it re-decides at once every association whose
first matching rule changes (``affected_keys``) and ends the held polls
the new rules refuse.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sentry.model import AccessRule, AccessRules

from .access_rules import check_rule
from .audit import audited, require_actor
from .changes import Changes, PutAccessRules
from .errors import ConflictError, NotFoundError, ValidationError
from .snapshot import Snapshot

__all__ = ["MAX_RULES", "add_rule", "move_rule", "remove_rule", "rule_view"]

MAX_RULES = 500
"""How many rules the gateway keeps (Exchange's ABQ lists are a few dozen)."""


# --- Admin writes ---


def rule_view(rule: AccessRule, position: int) -> dict[str, Any]:
    """A rule as the API, the CLI and the audit log show it (``position`` from 1)."""
    return {
        "name": rule.name,
        "position": position,
        "field": rule.field.value,
        "match": rule.match.value,
        "value": rule.value,
        "action": rule.action.value,
        "note": rule.note,
        "actor": rule.actor,
        "at": rule.at,
    }


def add_rule(
    snapshot: Snapshot,
    rule: AccessRule,
    *,
    actor: str,
    now: float,
    position: int | None = None,
) -> Changes:
    """Insert ``rule`` at ``position`` (1 = evaluated first; None or past the
    end: last).

    ``ValidationError`` for a rule that cannot work; ``ConflictError`` when
    the name is taken or there are ``MAX_RULES`` rules already."""
    actor = require_actor(actor)
    rule = replace(check_rule(rule), actor=actor, at=now, note=rule.note.strip())
    rules = snapshot.access_rules.rules
    if snapshot.access_rules.get(rule.name) is not None:
        raise ConflictError(f"a device access rule {rule.name!r} exists already")
    if len(rules) >= MAX_RULES:
        raise ConflictError(f"there are {MAX_RULES} device access rules already (the most)")
    at = _position(position, len(rules) + 1)
    new = AccessRules((*rules[: at - 1], rule, *rules[at - 1 :]))
    entry = audited(
        at=now,
        actor=actor,
        action="add_access_rule",
        target=f"access_rule:{rule.name}",
        note=rule.note,
        before=None,
        after=rule_view(rule, at),
    )
    return (PutAccessRules(new), entry)


def move_rule(
    snapshot: Snapshot, name: str, position: int, *, actor: str, now: float, note: str = ""
) -> Changes:
    """Move rule ``name`` to ``position`` (1 = first; past the end: last);
    nothing when it is there."""
    actor = require_actor(actor)
    rules = list(snapshot.access_rules.rules)
    old = _find(snapshot, name)
    at = _position(position, len(rules))
    if at == old + 1:
        return ()
    rule = rules.pop(old)
    rules.insert(at - 1, rule)
    entry = audited(
        at=now,
        actor=actor,
        action="move_access_rule",
        target=f"access_rule:{name}",
        note=note.strip(),
        before={"position": old + 1},
        after={"position": at},
    )
    return (PutAccessRules(AccessRules(tuple(rules))), entry)


def remove_rule(
    snapshot: Snapshot, name: str, *, actor: str, now: float, note: str = ""
) -> Changes:
    """Delete rule ``name`` (``NotFoundError`` when there is none)."""
    actor = require_actor(actor)
    rules = list(snapshot.access_rules.rules)
    old = _find(snapshot, name)
    rule = rules.pop(old)
    entry = audited(
        at=now,
        actor=actor,
        action="remove_access_rule",
        target=f"access_rule:{name}",
        note=note.strip(),
        before=rule_view(rule, old + 1),
        after=None,
    )
    return (PutAccessRules(AccessRules(tuple(rules))), entry)


def _find(snapshot: Snapshot, name: str) -> int:
    index = snapshot.access_rules.index(name)
    if index is None:
        raise NotFoundError(f"no device access rule {name!r}")
    return index


def _position(position: int | None, last: int) -> int:
    """A 1-based position; None or one past the end means last."""
    if position is None or position > last:
        return last
    if position < 1:
        raise ValidationError(f"position must be at least 1, not {position}")
    return position
