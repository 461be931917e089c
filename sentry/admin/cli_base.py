"""Shared parts of the ``sentry admin`` commands: parsers, the run loop, helpers.

Approach. A leaf command is a function ``(target, args) -> (answer, render)``
(``Command``). ``Builder.leaf`` creates its parser with the connection options
every leaf shares (``--config``, ``--url``, ``--token``, ``--token-file``,
``--actor``, ``--json``) and wraps it in ``_handler``, which resolves the
target, runs the command, prints JSON or the rendering, and turns an API
refusal into exit status 1 (message and per-field problems on stderr) and an
unreachable target into ``CliError`` (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .cli_client import AdminTarget, ApiFailure, TargetError, resolve_target
from .cli_format import COLUMNS, page_footer, table

__all__ = [
    "Builder",
    "Command",
    "Render",
    "add_note",
    "add_paging",
    "as_handler",
    "get_command",
    "items_render",
    "page_render",
    "quote_path",
    "with_note",
]

Render = Callable[[Any], str]
Command = Callable[[AdminTarget, argparse.Namespace], tuple[Any, Render]]


class Builder:
    """Creates leaf parsers that share the connection options."""

    def __init__(self, top: Any) -> None:
        self.top = top
        self.common = argparse.ArgumentParser(add_help=False)
        c = self.common.add_argument_group("connection")
        c.add_argument(
            "--config",
            type=Path,
            help="config file giving admin.listen, admin.tls, admin.token_file "
            "(default: config/sentry.yaml)",
        )
        c.add_argument("--url", help="admin API base URL, e.g. http://127.0.0.1:9090")
        c.add_argument("--token", help="the admin bearer token")
        c.add_argument("--token-file", type=Path, help="a file holding the admin token")
        c.add_argument(
            "--cacert",
            type=Path,
            help="CA or certificate to trust for https (default: admin.tls.cert)",
        )
        c.add_argument("--actor", help="who is acting (X-Sentry-Actor; default: admin)")
        c.add_argument("--json", action="store_true", help="print the API's JSON answer")

    def group(self, name: str, help: str) -> Any:
        parser = self.top.add_parser(name, help=help)
        return parser.add_subparsers(title="actions", metavar="ACTION", required=True)

    def leaf(self, subs: Any, name: str, help: str, command: Command) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = subs.add_parser(name, help=help, parents=[self.common])
        parser.set_defaults(handler=as_handler(command))
        return parser


def as_handler(command: Command) -> Callable[[argparse.Namespace], int]:
    """The argparse handler running ``command`` against the resolved target."""
    return _handler(command)


def _handler(command: Command) -> Callable[[argparse.Namespace], int]:
    def handle(args: argparse.Namespace) -> int:
        try:
            target = resolve_target(
                url=args.url,
                token=args.token,
                token_file=args.token_file,
                config=args.config,
                actor=args.actor,
                cafile=args.cacert,
            )
            answer, render = command(target, args)
        except ApiFailure as exc:
            return _refused(exc, args.json)
        except TargetError as exc:
            from sentry.errors import CliError

            raise CliError(str(exc)) from None
        if answer is not None:  # None: the command wrote its own output (a download)
            print(json.dumps(answer, indent=2) if args.json else render(answer))
        return 0

    return handle


def _refused(exc: ApiFailure, as_json: bool) -> int:
    if as_json:
        print(json.dumps(exc.body, indent=2))
    print(f"sentry: error: HTTP {exc.status}: {exc.message}", file=sys.stderr)
    for name, problem in exc.fields.items():
        print(f"  {name}: {problem}", file=sys.stderr)
    for problem in exc.problems:
        print(f"  {problem}", file=sys.stderr)
    return 1


def quote_path(text: str) -> str:
    """``text`` as one URL path segment."""
    return quote(text, safe="")


def add_note(parser: argparse.ArgumentParser, required: bool = False) -> None:
    """Add ``--note``."""
    text = "why (kept in the audit log)" + ("; required" if required else "")
    parser.add_argument("--note", required=required, default=None, help=text)


def with_note(args: argparse.Namespace, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with the ``--note`` given, if any."""
    return body if args.note is None else {**body, "note": args.note}


def add_paging(parser: argparse.ArgumentParser) -> None:
    """Add ``--offset`` and ``--limit``."""
    parser.add_argument("--offset", type=int, default=0, help="rows to skip")
    parser.add_argument("--limit", type=int, default=100, help="rows per page (at most 1000)")


def page_render(kind: str) -> Render:
    """A paged answer as a table of ``kind`` and a ``rows a-b of n`` line."""
    return lambda page: table(page["items"], COLUMNS[kind]) + "\n" + page_footer(page)


def items_render(kind: str) -> Render:
    """An ``{"items": [...]}`` answer as a table of ``kind``."""
    return lambda answer: table(answer["items"], COLUMNS[kind])


def get_command(path: str, render: Render) -> Command:
    """A command that GETs ``path``."""
    return lambda t, args: (t.call("GET", path), render)
