"""Operator subcommands: ``sentry run``, ``sentry certs init``, ``sentry demo-backend``.

Kept apart from ``cli.py`` (the protocol tools) so that the debugging commands
import nothing of the server. Each ``add_*`` registers one group on the
subparsers of ``sentry.cli``.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

__all__ = ["add_certs", "add_demo_backend", "add_demo_client", "add_run"]


class _Fail(Exception):
    pass


def add_run(subparsers: Any) -> None:
    p = subparsers.add_parser("run", help="start the gateway")
    p.add_argument("--config", type=Path, default=Path("config/sentry.yaml"))
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from sentry.app import run
    from sentry.cli import CliError
    from sentry.settings import SettingsError, load_settings

    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        raise CliError(str(exc)) from None
    from sentry.store.base import StoreOpenError

    try:
        asyncio.run(run(settings))
    except StoreOpenError as exc:  # the database cannot be used
        raise CliError(f"{exc.key_path}: {exc}") from None
    except OSError as exc:  # e.g. the port is taken
        raise CliError(f"cannot start: {exc}") from None
    return 0


def add_certs(subparsers: Any) -> None:
    group = subparsers.add_parser("certs", help="TLS certificates for the device listener")
    actions = group.add_subparsers(title="actions", metavar="ACTION", required=True)
    init = actions.add_parser("init", help="(re)generate the certificate and key")
    init.add_argument("--fqdn", required=True, help="the gateway's name as devices use it")
    init.add_argument("--cert", type=Path, default=Path("certs/sentry.pem"))
    init.add_argument("--key", type=Path, default=Path("certs/sentry.key"))
    init.add_argument("--ca", action="store_true", help="also make a test CA that signs it")
    init.set_defaults(handler=_certs_init)


def _certs_init(args: argparse.Namespace) -> int:
    from sentry.certs import make_ca, make_self_signed, make_signed, write_pair

    if args.ca:
        ca = make_ca()
        ca_cert = args.cert.with_name("ca.pem")
        write_pair(ca, ca_cert, args.key.with_name("ca.key"))
        write_pair(make_signed(args.fqdn, ca), args.cert, args.key)
        print(f"CA certificate: {ca_cert} (install it on test devices)")
    else:
        write_pair(make_self_signed(args.fqdn), args.cert, args.key)
    print(f"certificate for {args.fqdn}: {args.cert}, key: {args.key} (mode 0600)")
    return 0


def add_demo_backend(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo-backend", help="run the demo EAS backend", add_help=False, prefix_chars="\0"
    )
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(handler=_demo_backend)


def _demo_backend(args: argparse.Namespace) -> int:
    from sentry.testing.demo_cli import demo_backend_main

    return demo_backend_main(list(args.rest))


def add_demo_client(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo-client", help="sync a mailbox through the gateway", add_help=False, prefix_chars="\0"
    )
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(handler=_demo_client)


def _demo_client(args: argparse.Namespace) -> int:
    from sentry.testing.demo_client import demo_client_main

    return demo_client_main(list(args.rest))
