"""Routes of the device access rules and the quarantine list.

Approach. The rules are one ordered list (``sentry.policy.access_rules``);
these routes list it, add a rule at a position, move one, remove one. Each
write is a pure build (``policy.add_rule``/``move_rule``/``remove_rule``:
checked first, so a rule that cannot work is a 400 and nothing changes)
committed like every admin change: one transaction, audited, then every
association whose first matching rule changed is decided again and the
held polls the new rules refuse are ended (``polls_ended``).

The quarantine list is the association list's ``state=quarantined``: rows a
quarantine rule refuses and no admin has decided on. An admin resolves one
with the association's Allow or Block (``/api/associations/{device_id}/{user}/allow``):
the personal exemption beats the rule, as in Exchange.
"""

from __future__ import annotations

from typing import Any

from sentry.model import AccessRule, RuleAction, RuleField, RuleMatch
from sentry.policy import Changes, Snapshot, add_rule, move_rule, remove_rule
from sentry.policy.access_admin import MAX_RULES
from sentry.policy.access_rules import (
    CONTROL_CHARACTERS,
    MAX_PATTERN,
    NAME_PATTERN,
    TEXT_MATCHES,
    VERSION_MATCHES,
    VERSION_PATTERN,
)
from sentry.store.base import AssociationFilter, AssociationState

from .context import iso
from .errors import NotFound
from .listing import PAGE_FIELDS
from .schema import WHITESPACE, Call, Field, Route
from .views import association_item

__all__ = ["ROUTES", "access_rule_view"]

_NOTE = Field("string", "why (kept in the audit log)")
_POSITION = Field("integer", "1 = evaluated first (default: last)", minimum=1, maximum=MAX_RULES)
_NAME = Field(
    "string",
    "the rule's unique name: 1 to 64 letters, digits, '.', '_' or '-'",
    required=True,
    max_length=64,
    pattern=NAME_PATTERN,
    mismatch="1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit",
)
_ADD_BODY = {
    "name": _NAME,
    "field": Field(
        "string", "what the rule looks at", required=True, choices=tuple(f.value for f in RuleField)
    ),
    "match": Field(
        "string",
        "equals, prefix, glob (text; case-insensitive; glob: * and ?) or equals, lt, le, gt, "
        "ge (protocol_version, compared as major.minor)",
        required=True,
        choices=tuple(m.value for m in RuleMatch),
    ),
    "value": Field(
        "string", "the text, pattern or version", required=True, blank=False, max_length=MAX_PATTERN
    ),
    "action": Field(
        "string",
        "what a matching association gets",
        required=True,
        choices=tuple(a.value for a in RuleAction),
    ),
    "position": _POSITION,
    "note": _NOTE,
}
_TEXT_FIELDS = sorted(f.value for f in RuleField if f is not RuleField.PROTOCOL_VERSION)
_NO_CONTROL = f"[^{CONTROL_CHARACTERS}]*"
_ADD_RULES = {  # which matches go with which fields, and the value each needs
    "oneOf": [
        {
            "properties": {
                "field": {"enum": [RuleField.PROTOCOL_VERSION.value]},
                "match": {"enum": sorted(m.value for m in VERSION_MATCHES)},
                "value": {"pattern": VERSION_PATTERN},
            }
        },
        {
            "properties": {
                "field": {"enum": _TEXT_FIELDS},
                "match": {"enum": sorted(m.value for m in TEXT_MATCHES)},
                "value": {"pattern": f"^{_NO_CONTROL}[^{CONTROL_CHARACTERS}{WHITESPACE}]"
                          f"{_NO_CONTROL}$"},
            }
        },
    ]
}  # fmt: skip
_MOVE_BODY = {
    "position": Field(
        "integer",
        "the new position (1 = first; past the end: last)",
        required=True,
        minimum=1,
        maximum=MAX_RULES,
    ),
    "note": _NOTE,
}


def access_rule_view(rule: AccessRule, position: int) -> dict[str, Any]:
    """One rule as the API shows it (``position`` from 1)."""
    return {
        "name": rule.name,
        "position": position,
        "field": rule.field.value,
        "match": rule.match.value,
        "value": rule.value,
        "action": rule.action.value,
        "note": rule.note,
        "actor": rule.actor,
        "at": iso(rule.at),
    }


def _items(snap: Snapshot) -> list[dict[str, Any]]:
    return [access_rule_view(r, i) for i, r in enumerate(snap.access_rules.rules, 1)]


async def _list_rules(call: Call) -> dict[str, Any]:
    return {"items": _items(call.ctx.snapshot)}


def _one(snap: Snapshot, name: str) -> dict[str, Any]:
    index = snap.access_rules.index(name)
    if index is None:
        raise NotFound(f"no device access rule {name!r}")
    return access_rule_view(snap.access_rules.rules[index], index + 1)


async def _add_rule(call: Call) -> dict[str, Any]:
    body = call.body
    rule = AccessRule(
        body["name"],
        RuleField(body["field"]),
        RuleMatch(body["match"]),
        body["value"],
        RuleAction(body["action"]),
        note=call.note,
    )

    def build(snap: Snapshot, now: float) -> Changes:
        return add_rule(snap, rule, actor=call.actor, now=now, position=body.get("position"))

    ended = await call.ctx.commit(build)
    return {"rule": _one(call.ctx.snapshot, rule.name), "polls_ended": ended}


async def _move_rule(call: Call) -> dict[str, Any]:
    name, position = call.path["name"], call.body["position"]

    def build(snap: Snapshot, now: float) -> Changes:
        return move_rule(snap, name, position, actor=call.actor, now=now, note=call.note)

    ended = await call.ctx.commit(build)
    return {"rule": _one(call.ctx.snapshot, name), "polls_ended": ended}


async def _remove_rule(call: Call) -> dict[str, Any]:
    name = call.path["name"]

    def build(snap: Snapshot, now: float) -> Changes:
        return remove_rule(snap, name, actor=call.actor, now=now, note=call.note)

    ended = await call.ctx.commit(build)
    return {"deleted": name, "polls_ended": ended}


_QUARANTINED = AssociationFilter(state=AssociationState.QUARANTINED)


async def _list_quarantine(call: Call) -> dict[str, Any]:
    offset, limit = call.query.get("offset", 0), call.query.get("limit", 100)
    rows, total = await call.ctx.store.list_associations(_QUARANTINED, offset, limit)
    items = [association_item(r) for r in rows]
    return {"items": items, "total": total, "offset": offset, "limit": limit}


_TAG = "access rules"
_RULE = "/api/access-rules/{name}"
_ORDER_DOC = (
    "The first rule that matches decides. A rule on a field the device has not sent does "
    "not match. Admin Allow/Block of an association beats every rule; rules beat auto-block."
)

ROUTES = (
    Route(
        "GET",
        "/api/access-rules",
        _list_rules,
        "The device access rules, in evaluation order",
        _TAG,
        response="AccessRuleList",
        description=_ORDER_DOC,
    ),
    Route(
        "POST",
        "/api/access-rules",
        _add_rule,
        "Add a device access rule (allow, block or quarantine) at a position",
        _TAG,
        body=_ADD_BODY,
        body_rules=_ADD_RULES,
        status=201,
        response="AccessRuleChange",
        conflict=True,
        changes=True,
        description="400 for a rule that cannot work (a version operator on text, a version "
        "that is not major.minor, a value with control characters); 409 when the name is "
        f"taken or there are {MAX_RULES} rules. " + _ORDER_DOC,
    ),
    Route(
        "POST",
        _RULE + "/move",
        _move_rule,
        "Move a device access rule to another position",
        _TAG,
        body=_MOVE_BODY,
        response="AccessRuleChange",
        changes=True,
        description="400 for a position past the end; 404 for an unknown rule.",
    ),
    Route(
        "DELETE",
        _RULE,
        _remove_rule,
        "Remove a device access rule",
        _TAG,
        body={"note": _NOTE},
        response="Deleted",
        changes=True,
    ),
    Route(
        "GET",
        "/api/quarantine",
        _list_quarantine,
        "Quarantined associations: refused by a quarantine rule, waiting for an admin's "
        "Allow or Block",
        _TAG,
        query=PAGE_FIELDS,
        response="AssociationPage",
        uses_store=True,
        description="The same rows as /api/associations?state=quarantined; each names the "
        "rule in `access_rule`.",
    ),
)
