"""``sentry admin ...``: every admin API action from the command line.

Approach. The CLI is a thin client of the admin REST API (``cli_client``).
Each leaf command is a small function ``(target, args) -> (answer, render)``
(``cli_base``): it makes one API call and says how to print the answer for
people (a table or ``key: value`` lines, ``cli_format``); ``--json`` prints
the API's JSON instead, for scripts. Every leaf takes the same connection
options (``--config``, ``--url``, ``--token``, ``--token-file``, ``--actor``)
wherever they are placed. Exit status: 0 done, 1 the API refused (its
message and per-field problems on stderr), 2 usage or connection problems.
This module holds the association commands; ``cli_registry`` the others.

    sentry admin list --user bob --state blocked
    sentry admin allow DEVICEID bob --note "verified by phone"
    sentry admin reset DEVICEID bob --note "exception over"
    sentry admin preapprove NEWPHONE01 bob@corp.example --note "new starter"
    sentry admin bulk block --user bob --note "lost phones" --dry-run
    sentry admin export --state blocked --format csv --output blocked.csv
    sentry admin devices compliance iphone-7 --violation compromised
    sentry admin list --verified no            # strangers' rows: never counted
    sentry admin reset-backend-type DEVICEID --note "phone handed over"

A bulk action needs a filter or ``--all``: nothing acts on every row by
omission. ``cli_tools`` holds the commands that are not API calls (token
rotation) and ``sentry store backup``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sentry.model import Reason, ViolationKind

from .cli_base import (
    Builder,
    Command,
    Render,
    add_note,
    add_paging,
    page_render,
    quote_path,
)
from .cli_client import AdminTarget
from .cli_directory import add_directory_commands
from .cli_format import cell, record
from .cli_redirects import add_redirect_commands
from .cli_registry import add_registry_commands
from .cli_rules import add_rule_commands
from .cli_store import add_store_commands
from .cli_tools import add_tool_commands, create_output

__all__ = ["add_admin"]

_STATES = ("allowed", "blocked", "quarantined", "wipe_pending", "wiped")
_FILTERS = (
    *("user", "device_id", "device_type", "state", "reason", "linked", "pool"),
    *("verified", "throwaway", "never_seen", "violation"),
)


def add_admin(subparsers: Any) -> None:
    """Register ``sentry admin`` and its commands."""
    group = subparsers.add_parser("admin", help="administer a running gateway through its API")
    b = Builder(group.add_subparsers(title="commands", metavar="COMMAND", required=True))
    _add_associations(b)
    add_registry_commands(b)
    add_rule_commands(b)
    add_tool_commands(b)
    add_redirect_commands(b)
    add_store_commands(b)
    add_directory_commands(b)


# --- associations ---


def _add_associations(b: Builder) -> None:
    p = b.leaf(b.top, "list", "the ActiveSync association list (one page)", _list)
    _filter_args(p)
    add_paging(p)
    p = b.leaf(b.top, "show", "one association: decision, reasons, history", _show)
    _key_args(p)
    for action, text in _ACTIONS.items():
        p = b.leaf(b.top, action, text, _act(action))
        _key_args(p)
        add_note(p, required=True)
        if action == "wipe":
            p.add_argument("--account-only", action="store_true", help="AccountOnlyRemoteWipe")
        if action == "link":
            p.add_argument("--device", required=True, help="the managed device id")
    p = b.leaf(b.top, "bulk", "one action on every association matching filters", _bulk)
    p.add_argument(
        "action", choices=("allow", "block", "reset", "wipe", "remove"), help="the action"
    )
    _filter_args(p)
    p.add_argument("--all", action="store_true", help="act on every row (instead of filters)")
    add_note(p, required=True)
    p.add_argument("--dry-run", action="store_true", help="list what would change, change nothing")
    p.add_argument("--account-only", action="store_true", help="wipe: AccountOnlyRemoteWipe")
    p = b.leaf(b.top, "export", "every matching association as CSV or JSON (all pages)", _export)
    _filter_args(p)
    p.add_argument("--format", choices=("csv", "json"), default="csv", help="the file format")
    p.add_argument("--output", type=Path, help="write to this file (mode 0600) instead of stdout")
    p.add_argument("--force", action="store_true", help="replace an existing --output file")


_ACTIONS = {
    "allow": "allow one association (wins over auto-block, compliance, limits)",
    "block": "block one association",
    "reset": "reset one association to automatic (clears its Allow or Block)",
    "wipe": "wipe the device of one association at its next request",
    "remove": "remove one association from the list (its history is kept)",
    "link": "link one association to a managed device",
    "preapprove": "create an association, allowed, before the device's first request",
}


def _filter_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--user", help="principal or a part of it")
    p.add_argument("--device-id", help="an EAS DeviceId (any case)")
    p.add_argument("--device-type", help="the EAS DeviceType, exactly")
    p.add_argument("--state", choices=_STATES, help="the list state")
    p.add_argument("--reason", choices=[r.value for r in Reason], help="a reason of the decision")
    p.add_argument("--linked", choices=("yes", "no"), help="linked to a managed device or not")
    p.add_argument("--pool", help="the backend pool of the decision")
    p.add_argument("--verified", choices=("yes", "no"), help="no: rows the backend never accepted")
    p.add_argument("--throwaway", choices=("yes", "no"), help="DeviceIds validate/webservice")
    p.add_argument(
        "--never-seen", choices=("yes", "no"), help="pre-approved rows no device has used yet"
    )
    p.add_argument(
        "--violation",
        choices=[k.value for k in ViolationKind],
        help="a compliance violation the decision recorded",
    )


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    values = {name: getattr(args, name) for name in _FILTERS}
    for flag in ("linked", "verified", "throwaway", "never_seen"):
        if values[flag] is not None:
            values[flag] = values[flag] == "yes"
    return {k: v for k, v in values.items() if v is not None}


def _key_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("device_id", help="the EAS DeviceId")
    p.add_argument("user", help="the mailbox user")


def _row(args: argparse.Namespace) -> str:
    return f"/api/associations/{quote_path(args.device_id)}/{quote_path(args.user)}"


def _list(t: AdminTarget, args: argparse.Namespace) -> tuple[Any, Render]:
    query = {**_filters(args), "offset": args.offset, "limit": args.limit}
    return t.call("GET", "/api/associations", query=query), page_render("associations")


def _show(t: AdminTarget, args: argparse.Namespace) -> tuple[Any, Render]:
    return t.call("GET", _row(args)), record


def _act(action: str) -> Command:
    def run(t: AdminTarget, args: argparse.Namespace) -> tuple[Any, Render]:
        body: dict[str, Any] = {"note": args.note}
        if action == "wipe" and args.account_only:
            body["account_only"] = True
        if action == "link":
            body["device"] = args.device
        answer = t.call("POST", f"{_row(args)}/{action}", body)
        return answer, lambda a: _action_text(action, args, a)

    return run


def _action_text(action: str, args: argparse.Namespace, answer: Any) -> str:
    row = answer["association"]
    done = f"{action}: {args.device_id} / {args.user}"
    if row is None:
        return f"{done}: removed"
    if row["never_seen"]:
        done += " (pre-approved, never seen)"
    reasons = cell(row["reasons"])
    return f"{done}: {row['state']} (reasons {reasons}); held polls ended: {answer['polls_ended']}"


def _bulk(t: AdminTarget, args: argparse.Namespace) -> tuple[Any, Render]:
    from sentry.cli import CliError

    filters = _filters(args)
    if bool(filters) == bool(args.all):
        raise CliError("give filters (--user, --state, ...) or --all, not both and not neither")
    body: dict[str, Any] = {"note": args.note, "dry_run": args.dry_run}
    body |= {"all": True} if args.all else {"filter": filters}
    if args.account_only:
        body["account_only"] = True
    answer = t.call("POST", f"/api/associations/actions/{args.action}", body)
    return answer, lambda a: _bulk_text(args.action, a)


def _bulk_text(action: str, a: Any) -> str:
    dry = a["dry_run"]
    head = f"matched {a['matched']}, {'would change' if dry else 'changed'} {len(a['changed'])}"
    lines = [
        head + f", skipped {len(a['skipped'])}" + (" (dry run: nothing changed)" if dry else "")
    ]
    verb = f"would {action}" if dry else action
    lines += [f"  {verb} {k['device_id']} / {k['user']}" for k in a["changed"]]
    lines += [
        f"  skipped {s['key']['device_id']} / {s['key']['user']}: {s['error']}"
        for s in a["skipped"]
    ]
    return "\n".join(lines)


def _export(t: AdminTarget, args: argparse.Namespace) -> tuple[Any, Render]:
    query = {**_filters(args), "format": args.format}
    if args.output is None:
        t.download("/api/associations/export", sys.stdout.buffer, query)
        sys.stdout.buffer.flush()
        return None, str
    with create_output(args.output, force=args.force) as out:
        size = t.download("/api/associations/export", out, query)
    answer = {"file": str(args.output), "bytes": size, "format": args.format}
    return answer, lambda a: f"wrote {a['bytes']} bytes of {a['format']} to {a['file']}"
