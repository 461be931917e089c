"""Routes of the ActiveSync association list: list, one row, actions, bulk actions.

Approach. Reads come from the store (a list page, a row's history) and the
in-memory snapshot (the row as decided now). Every action builds its whole
change list first (``actions.py``) and applies it with one
``AccessState.commit``, so a refused action changes nothing and an accepted
one reaches held long polls at once. Each action is a route of its own (the
URLs are ``.../{allow|block|wipe|remove|link}``), so the document states
exactly the body each takes: ``account_only`` for wipe only, ``device``
(required) for link only. Path users may be given in any form
(``CORP\\bob``, ``bob@corp.example``, a user's email or alias): they go
through the one principal rule under the configured realms and the alias
index (``Snapshot.canonical``), as the request path does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from sentry.model import AssociationKey, canonical_device_id
from sentry.policy import Change, Snapshot, backend_scope, evaluate
from sentry.policy.audit import plain
from sentry.policy.rules import managed_device

from .actions import ACTIONS, BULK_ACTIONS, ActionOptions, BulkPlan, build_action, plan_bulk
from .errors import BadRequest, NotFound
from .listing import FILTER_FIELDS, PAGE_FIELDS, Query, list_page, matching
from .schema import Call, Field, Fields, Handler, Route
from .views import (
    association_item,
    decision_view,
    device_view,
    established_view,
    history_view,
    key_view,
)

__all__ = ["ROUTES", "association_key"]

_NOTE = Field(
    "string", "why (kept with the action and in the audit log)", required=True, blank=False
)
_ACCOUNT_ONLY = Field("boolean", "AccountOnlyRemoteWipe where the device supports it")
_OPTIONS: dict[str, Fields] = {
    "wipe": {"account_only": _ACCOUNT_ONLY},
    "link": {
        "device": Field("string", "the managed device id to link the row to", True, blank=False)
    },
}
_BULK_FILTER = {  # in a bulk action a filter value given is a value: never blank
    name: replace(f, blank=False) if f.kind == "string" else f for name, f in FILTER_FIELDS.items()
}
_BULK_BODY = {
    "filter": Field("object", "the list filters (at least one, or `all`)", fields=_BULK_FILTER),
    "all": Field("boolean", "true: act on every row (instead of a filter)"),
    "note": _NOTE,
    "dry_run": Field("boolean", "list what would change and change nothing"),
}


_BULK_RULES: dict[str, Any] = {
    "anyOf": [
        {
            "required": ["filter"],
            "properties": {"filter": {"minProperties": 1}, "all": {"enum": [False]}},
        },
        {
            "required": ["all"],
            "properties": {"all": {"enum": [True]}, "filter": {"maxProperties": 0}},
        },
    ]
}
"""A filter with a value, or ``"all": true`` and no filter value (``_bulk_query``)."""


_SUMMARIES = {
    "allow": "Allow an association",
    "block": "Block an association",
    "reset": "Reset an association to automatic (clear its Allow or Block)",
    "wipe": "Wipe the device of an association",
    "remove": "Remove an association",
    "link": "Link an association to a managed device",
    "preapprove": "Pre-approve a (device, mailbox) pair before its first request",
}
_ACTION_DOCS = {
    "reset": "`reset` clears an Allow or Block (back to automatic). ",
    "preapprove": "`preapprove` creates the row, allowed, before the device's first request "
    "(listed `never_seen`). ",
}
_CONFLICTS = (
    "409 when the transition is not allowed: a wiped row takes only remove; reset of a wipe; "
    "preapprove of an existing row, or of one that would be refused even allowed (no route, "
    "another backend type on the device); link to a missing or retired device; an "
    "account-only wipe of a client older than 16.1."
)


def _action_body(action: str) -> Fields:
    return {"note": _NOTE, **_OPTIONS.get(action, {})}


def _bulk_body(action: str) -> Fields:
    return {**_BULK_BODY, **_OPTIONS.get(action, {})}


def association_key(call: Call, *, creating: bool = False) -> AssociationKey:
    """The row named by the path (DeviceId and user canonicalised).

    A user text that names no account names no row: 404, except for an
    action that creates the row (``creating``: pre-approve), where it is a 400."""
    user = call.ctx.snapshot.canonical(call.path["user"])
    if user is None:
        if creating:
            raise BadRequest("not a user principal", {"user": "names no account"})
        raise NotFound(f"no association: {call.path['user']!r} names no account")
    return AssociationKey(canonical_device_id(call.path["device_id"]), user)


async def _list_associations(call: Call) -> dict[str, Any]:
    offset, limit = call.query.get("offset", 0), call.query.get("limit", 100)
    query = Query.of(call.query, call.ctx.snapshot)
    rows, total = await list_page(call.ctx.store, call.ctx.snapshot, query, offset, limit)
    items = [association_item(r) for r in rows]
    return {"items": items, "total": total, "offset": offset, "limit": limit}


async def _get_association(call: Call) -> dict[str, Any]:
    key, snap = association_key(call), call.ctx.snapshot
    row = snap.get(key)
    if row is None:
        raise NotFound(f"no association for device {key.device_id!r}, user {key.user!r}")
    decision = evaluate(key, snap, call.ctx.now())
    device = managed_device(row, snap)
    history = await call.ctx.store.history(key)
    scope = backend_scope(row, snap)
    return {
        **association_item(row),
        "backend_scope": scope,
        "established_backend_type": established_view(snap.established(scope)),
        "decision": decision_view(decision),
        "device_information": None if row.device_info is None else plain(row.device_info),
        "managed_device": None if device is None else device_view(device, snap),
        "history": [history_view(e) for e in history],
    }


def _options(action: str, call: Call) -> ActionOptions:
    """The action's options (its route's body spec lets only its own through)."""
    body = call.body
    only, device = bool(body.get("account_only", False)), str(body.get("device", "")).strip()
    return ActionOptions(action, call.note, call.actor, only, device)


def _act(action: str) -> Handler:
    async def act(call: Call) -> dict[str, Any]:
        key = association_key(call, creating=action == "preapprove")
        opts = _options(action, call)
        ended = await call.ctx.commit(lambda snap, now: build_action(snap, key, opts, now))
        row = call.ctx.snapshot.get(key)
        item = None if row is None else association_item(row)
        return {"association": item, "polls_ended": ended}

    act.__name__ = f"{action}_association"
    return act


def _bulk(action: str) -> Handler:
    async def bulk(call: Call) -> dict[str, Any]:
        return await _bulk_action(action, call)

    bulk.__name__ = f"bulk_{action}"
    return bulk


def _bulk_query(body: Mapping[str, Any], snapshot: Snapshot) -> Query:
    """The rows a bulk action is for: a filter with at least one value, or
    ``"all": true`` (never both, never neither: an empty filter is a mistake,
    not a way to say "everything"). ``_BULK_RULES`` says the same in the
    document (filter strings are not blank here, so a value given is a value)."""
    query = Query.of(body.get("filter") or {}, snapshot)
    every = body.get("all") is True
    if every and query.describe():
        raise BadRequest("invalid bulk action", {"all": "not together with a filter"})
    if not every and not query.describe():
        problem = 'give at least one filter, or "all": true to act on every row'
        raise BadRequest("no filter", {"filter": problem})
    return query


async def _bulk_action(action: str, call: Call) -> dict[str, Any]:
    opts, ctx = _options(action, call), call.ctx
    query = _bulk_query(call.body, call.ctx.snapshot)
    dry_run = bool(call.body.get("dry_run", False))
    planned: list[tuple[list[AssociationKey], BulkPlan]] = []

    def build(snapshot: Snapshot, now: float) -> list[Change]:
        keys = [row.key for row in matching(snapshot, query)]
        planned.append((keys, plan_bulk(snapshot, keys, opts, now, query.describe())))
        return [] if dry_run else planned[-1][1].changes

    ended = await ctx.commit(build, answer_first=True)  # the admin first, then the Pings
    keys, plan = planned[-1]
    skipped = [{"key": key_view(k), "error": why} for k, why in plan.skipped]
    return {
        "matched": len(keys),
        "changed": [key_view(k) for k in plan.changed],
        "skipped": skipped,
        "dry_run": dry_run,
        "polls_ended": ended,
    }


_ROW = "/api/associations/{device_id}/{user}"
_TAG = "associations"

ROUTES = (
    Route(
        "GET",
        "/api/associations",
        _list_associations,
        "The ActiveSync association list (filtered, paged)",
        _TAG,
        query={**FILTER_FIELDS, **PAGE_FIELDS},
        response="AssociationPage",
        uses_store=True,
    ),
    Route(
        "GET",
        _ROW,
        _get_association,
        "One association: its decision now, every reason, DeviceInformation, history",
        _TAG,
        response="AssociationDetail",
        uses_store=True,
    ),
    *(
        Route(
            "POST",
            f"{_ROW}/{action}",
            _act(action),
            _SUMMARIES[action],
            _TAG,
            body=_action_body(action),
            response="ActionResult",
            conflict=True,
            changes=True,
            description=_ACTION_DOCS.get(action, "") + _CONFLICTS,
        )
        for action in ACTIONS
    ),
    *(
        Route(
            "POST",
            f"/api/associations/actions/{action}",
            _bulk(action),
            f"{action.capitalize()} every association matching a filter, in one transaction",
            _TAG,
            body=_bulk_body(action),
            body_rules=_BULK_RULES,
            response="BulkResult",
            changes=True,
            description="Rows the action cannot apply to are listed in `skipped`; the others "
            "change together. `dry_run` lists what would change and changes nothing. Without a "
            'filter value the body must say `"all": true` (an empty filter alone is a 400).',
        )
        for action in BULK_ACTIONS
    ),
)
