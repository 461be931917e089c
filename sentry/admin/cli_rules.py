"""``sentry admin rules`` and ``sentry admin quarantine``: device access rules.

One leaf command per API route (``cli_base``): ``rules list`` shows the rules
in evaluation order, ``rules add`` puts one at a position (default last),
``rules move`` and ``rules remove`` change the order and the set;
``quarantine list`` is the association list's ``state=quarantined`` (resolve
a row with ``sentry admin allow`` or ``block``).
"""

from __future__ import annotations

import argparse
from typing import Any

from sentry.model import RuleAction, RuleField, RuleMatch

from .cli_base import (
    Builder,
    Render,
    add_note,
    add_paging,
    get_command,
    items_render,
    page_render,
    quote_path,
    with_note,
)
from .cli_client import AdminTarget
from .cli_format import record

__all__ = ["add_rule_commands"]


def add_rule_commands(b: Builder) -> None:
    """Register ``rules list/add/move/remove`` and ``quarantine list``."""
    subs = b.group("rules", "device access rules (allow / block / quarantine), first match wins")
    listing = get_command("/api/access-rules", items_render("rules"))
    b.leaf(subs, "list", "the rules in evaluation order", listing)
    p = b.leaf(subs, "add", "add a rule (at --position, default last)", _add)
    p.add_argument("name", help="the rule's unique name (letters, digits, . _ -)")
    p.add_argument("field", choices=[f.value for f in RuleField], help="what the rule looks at")
    p.add_argument(
        "match",
        choices=[m.value for m in RuleMatch],
        help="equals/prefix/glob (text) or equals/lt/le/gt/ge (protocol_version)",
    )
    p.add_argument("value", help="the text, glob (* and ?) or version (major.minor)")
    p.add_argument("action", choices=[a.value for a in RuleAction], help="what a match gets")
    p.add_argument("--position", type=int, help="1 = evaluated first")
    add_note(p)
    p = b.leaf(subs, "move", "move a rule to another position", _move)
    p.add_argument("name", help="the rule's name")
    p.add_argument("position", type=int, help="the new position (1 = first)")
    add_note(p)
    p = b.leaf(subs, "remove", "remove a rule", _remove)
    p.add_argument("name", help="the rule's name")
    add_note(p)
    subs = b.group("quarantine", "associations a quarantine rule holds for an admin's decision")
    p = b.leaf(
        subs, "list", "quarantined associations (allow or block each to resolve it)", _quarantine
    )
    add_paging(p)


def _add(t: AdminTarget, args: argparse.Namespace) -> tuple[Any, Render]:
    body: dict[str, Any] = {
        "name": args.name,
        "field": args.field,
        "match": args.match,
        "value": args.value,
        "action": args.action,
    }
    if args.position is not None:
        body["position"] = args.position
    return t.call("POST", "/api/access-rules", with_note(args, body)), record


def _move(t: AdminTarget, args: argparse.Namespace) -> tuple[Any, Render]:
    body = with_note(args, {"position": args.position})
    return t.call("POST", f"/api/access-rules/{quote_path(args.name)}/move", body), record


def _remove(t: AdminTarget, args: argparse.Namespace) -> tuple[Any, Render]:
    answer = t.call("DELETE", f"/api/access-rules/{quote_path(args.name)}", with_note(args, {}))
    return answer, lambda a: f"removed {a['deleted']} ({a['polls_ended']} held polls ended)"


def _quarantine(t: AdminTarget, args: argparse.Namespace) -> tuple[Any, Render]:
    query = {"offset": args.offset, "limit": args.limit}
    return t.call("GET", "/api/quarantine", query=query), page_render("quarantine")
