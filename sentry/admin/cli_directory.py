"""``sentry admin directory status|sync``: the LDAP directory sync from the command line.

One leaf command per API route (see ``cli_base``): ``status`` shows where
the sync stands (``GET /api/directory``), ``sync`` runs one now and prints
its report (``POST /api/directory/sync``); a sync that fails exits 1 with
the reason (the users of the last sync stay).
"""

from __future__ import annotations

import argparse
from typing import Any

from .cli_base import Builder, Render, add_note, with_note
from .cli_client import AdminTarget
from .cli_format import record

__all__ = ["add_directory_commands"]


def add_directory_commands(b: Builder) -> None:
    """Register ``directory status`` and ``directory sync``."""
    subs = b.group("directory", "the LDAP directory sync")
    b.leaf(subs, "status", "configuration, last sync, errors, users by source", _status)
    p = b.leaf(subs, "sync", "sync the directory now and print the report", _sync)
    p.add_argument(
        "--allow-mass-removal",
        action="store_true",
        help="apply even if more users than max_removed_percent would be removed",
    )
    add_note(p)


def _status(t: AdminTarget, args: argparse.Namespace) -> tuple[Any, Render]:
    return t.call("GET", "/api/directory"), _status_text


def _status_text(answer: Any) -> str:
    if not answer["configured"]:
        return "no directory configured (directory.ldap)\n" + record({"users": answer["users"]})
    report = answer.pop("last_report", None)
    text = record(answer)
    if report is not None:
        text += "\nlast report:\n" + _report_text(report, indent=2)
    return text


def _sync(t: AdminTarget, args: argparse.Namespace) -> tuple[Any, Render]:
    body = with_note(args, {"allow_mass_removal": True} if args.allow_mass_removal else {})
    return t.call("POST", "/api/directory/sync", body), _report_text


def _report_text(report: Any, indent: int = 0) -> str:
    shown = {
        "server": report["server"],
        "entries": report["entries"],
        "pages": report["pages"],
        "action": report["action"],
        "counts": report["counts"],
        "duration_seconds": report["duration_seconds"],
        "polls_ended": report["polls_ended"],
    }
    for name in ("added", "changed", "removed", "errors", "push_problems"):
        if report.get(name):
            shown[name] = report[name]
    return record(shown, indent)
