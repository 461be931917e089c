"""``sentry admin redirects list|clear``: the redirect cache from the command line.

One leaf command per API route (see ``cli_base`` for the shape of a command):
``list`` shows where backends' 451 redirects sent each mailbox, ``clear``
empties the cache, or one mailbox's entry with ``--user``.
"""

from __future__ import annotations

import argparse
from typing import Any

from .cli_base import Builder, Render, add_note, quote_path, with_note
from .cli_client import AdminTarget
from .cli_format import Column, table

__all__ = ["add_redirect_commands"]

_COLUMNS: tuple[Column, ...] = (
    ("USER", lambda r: r["user"]),
    ("POOL", lambda r: r["pool"]),
    ("TARGET", lambda r: r["target"]),
    ("VIA POOL", lambda r: r["target_pool"]),
    ("EXPIRES", lambda r: r["expires_at"]),
)


def add_redirect_commands(b: Builder) -> None:
    """Register ``redirects list`` and ``redirects clear``."""
    subs = b.group("redirects", "the redirect cache (backend 451 redirects per mailbox)")
    p = b.leaf(subs, "list", "cached redirect targets, one per mailbox", _list)
    p.add_argument("--user", help="only this mailbox")
    p = b.leaf(subs, "clear", "clear the cache, or one mailbox's entry", _clear)
    p.add_argument("--user", help="only this mailbox")
    add_note(p)


def _list(t: AdminTarget, args: argparse.Namespace) -> tuple[Any, Render]:
    query = {} if args.user is None else {"user": args.user}
    answer = t.call("GET", "/api/redirects", query=query)
    return answer, lambda a: table(a["items"], _COLUMNS) + f"\n{a['total']} cached"


def _clear(t: AdminTarget, args: argparse.Namespace) -> tuple[Any, Render]:
    path = "/api/redirects"
    if args.user is not None:
        path += "/" + quote_path(args.user)
    answer = t.call("DELETE", path, with_note(args, {}))
    return answer, lambda a: f"cleared {a['cleared']} cached redirect(s)"
