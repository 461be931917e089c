"""The ``sentry`` command line: one argparse parser, subcommand groups plugged in.

Approach. Each group (``wbxml``, ``eas``, ``run``, ``certs``, ``store``,
``admin``, ``demo-backend``, ``demo-client``) registers itself from one
``_add_<group>(subparsers)`` function listed in ``_GROUPS`` and sets
``handler`` on its leaf parsers; a handler takes the parsed arguments and
returns the exit status. After the tree is built, ``_document`` gives every
parser its help as its description and one help formatter that shows
defaults, so ``sentry X --help`` always says what X does.

``main`` turns every expected failure into one line on stderr and exit
status 2, never a traceback: bad input and usage errors (``CliError``),
protocol errors, and start-up problems (``StartupError``, printed as
``sentry: error: <key path>: <problem>``). Output cut short by a closed pipe
(``sentry admin list | head``) ends quietly with status 141, as a process
killed by SIGPIPE would.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from sentry import cli_ops
from sentry.admin.cli import add_admin
from sentry.admin.cli_tools import add_store
from sentry.buildinfo import version_text
from sentry.eas.errors import EasError
from sentry.eas.request import EasRequest, parse_request
from sentry.eas.wbxml import decode, encode
from sentry.eas.xmlform import from_xml, to_xml
from sentry.errors import CliError, StartupError
from sentry.model import NO_REALMS

__all__ = ["CliError", "HelpFormatter", "StartupError", "build_parser", "main"]

PROG = "sentry"
EPIPE_STATUS = 128 + 13  # as if killed by SIGPIPE, like other Unix tools
Handler = Callable[[argparse.Namespace], int]


class HelpFormatter(argparse.HelpFormatter):
    """Help that shows an option's default when it has a meaningful one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if "%(default)" in text or default in (None, False, [], argparse.SUPPRESS):
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return f"{text} (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors become ``CliError`` (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        raise CliError(message)


if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[_Parser]


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        handler: Handler = args.handler
        status = handler(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return status
    except SystemExit as exc:  # --help and --version exit through argparse
        return exc.code if isinstance(exc.code, int) else 0
    except (CliError, EasError, StartupError) as exc:
        return _fail(str(exc))
    except BrokenPipeError:
        _stdout_to_devnull()
        return EPIPE_STATUS


def _fail(message: str) -> int:
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


def _stdout_to_devnull() -> None:
    """Nothing more can reach the reader: point stdout at /dev/null so the
    interpreter's final flush does not complain about the pipe."""
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):  # not a real file (tests capture stdout)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree, every parser documented (see ``_document``)."""
    parser = _Parser(prog=PROG, description="Sentry, an Exchange ActiveSync gateway.")
    parser.add_argument("--version", action="version", version=version_text())
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for add_group in _GROUPS:
        add_group(subparsers)
    _document(parser)
    return parser


def _document(parser: argparse.ArgumentParser) -> None:
    """Give each parser of the tree the defaults-showing formatter and, as its
    description, the help its parent lists it with."""
    parser.formatter_class = HelpFormatter
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {a.dest: a.help for a in action._choices_actions}
        for name, child in action.choices.items():
            if not child.description and helps.get(name):
                text = str(helps[name])
                child.description = text[:1].upper() + text[1:] + "."
            _document(child)


# --- sentry wbxml decode|encode ---


def _add_wbxml(subparsers: Subparsers) -> None:
    group = subparsers.add_parser("wbxml", help="convert between WBXML and its XML form")
    actions = group.add_subparsers(title="actions", metavar="ACTION", required=True)
    dec = actions.add_parser("decode", help="WBXML (file or stdin) -> XML on stdout")
    dec.add_argument("file", nargs="?", default="-", help="input file; '-' or none: stdin")
    dec.set_defaults(handler=_wbxml_decode)
    enc = actions.add_parser("encode", help="XML (file or stdin) -> WBXML bytes on stdout")
    enc.add_argument("file", nargs="?", default="-", help="input file; '-' or none: stdin")
    enc.set_defaults(handler=_wbxml_encode)


def _read_input(name: str) -> bytes:
    """The bytes of file ``name``, or of stdin for ``-``."""
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(name).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {name}: {exc.strerror or exc}") from None


def _wbxml_decode(args: argparse.Namespace) -> int:
    print(to_xml(decode(_read_input(args.file))))
    return 0


def _wbxml_encode(args: argparse.Namespace) -> int:
    try:
        text = _read_input(args.file).decode("utf-8")
    except UnicodeDecodeError:
        raise CliError(f"{args.file} is not UTF-8 text") from None
    data = encode(from_xml(text))
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
    return 0


# --- sentry eas query ---


def _add_eas(subparsers: Subparsers) -> None:
    group = subparsers.add_parser("eas", help="inspect EAS protocol input")
    actions = group.add_subparsers(title="actions", metavar="ACTION", required=True)
    query = actions.add_parser("query", help="parse an EAS request line and print it")
    query.add_argument("query", help="the query string, plain or base64 (with or without '?')")
    query.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="a request header (repeatable)",
    )
    query.add_argument("--method", default="POST", help="HTTP method (default POST)")
    query.add_argument("--json", action="store_true", help="print JSON instead of key: value")
    query.add_argument(
        "--config", metavar="FILE", help="key the user under this configuration's identity.realms"
    )
    query.set_defaults(handler=_eas_query)


def _parse_headers(lines: Sequence[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise CliError(f"header {line!r} is not 'Name: value'")
        headers[name.strip()] = value.strip()
    return headers


def _eas_query(args: argparse.Namespace) -> int:
    realms = NO_REALMS
    if args.config is not None:
        from sentry.settings import SettingsError, load_settings

        try:
            realms = load_settings(args.config).identity.to_realms()
        except SettingsError as exc:
            raise CliError(str(exc)) from None
    request = parse_request(args.method, args.query, _parse_headers(args.header), realms)
    fields = _request_fields(request)
    if args.json:
        print(json.dumps(fields, indent=2))
    else:
        width = max(len(k) for k in fields)
        for key, value in fields.items():
            print(f"{key + ':':<{width + 1}} {_plain(value)}")
    return 0


def _request_fields(request: EasRequest) -> dict[str, Any]:
    """A JSON-ready, flat view of an ``EasRequest``, in reading order."""
    user = request.user
    return {
        "method": request.method,
        "command": None if request.command is None else request.command.value,
        "query_form": request.query_form.value,
        "protocol_version": request.protocol_version,
        "device_id": request.device_id,
        "device_id_raw": request.device_id_raw,
        "device_type": request.device_type,
        "is_throwaway_device": request.is_throwaway_device,
        "policy_key": request.policy_key,
        "locale": request.locale,
        "user_key": None if user is None else user.key,
        "user_domain": None if user is None else user.domain,
        "user_source": None if user is None else user.source,
        "user_raw": None if user is None else user.raw,
        "query_user": request.query_user,
        "params": dict(request.params),
        "user_agent": request.user_agent,
        "content_type": request.content_type,
    }


def _plain(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items()) or "-"
    return str(value)


_GROUPS: tuple[Callable[[Subparsers], None], ...] = (
    _add_wbxml,
    _add_eas,
    cli_ops.add_run,
    cli_ops.add_certs,
    add_store,
    cli_ops.add_demo_backend,
    cli_ops.add_demo_client,
    add_admin,
)
"""Subcommand groups, in help order; each registers its parsers."""
