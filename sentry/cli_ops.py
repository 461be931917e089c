"""Operator subcommands: ``sentry run``, ``sentry certs``, ``sentry demo-*``.

Kept apart from ``cli.py`` (the protocol tools) so that the debugging commands
import nothing of the server. Each ``add_*`` registers one group on the
subparsers of ``sentry.cli``. Configured paths are relative to the working
directory, as ``sentry run`` resolves them.

``sentry certs`` follows the configuration (``--config``): the certificate
and key paths and the FQDN come from ``gateway.tls`` and ``gateway.fqdn``
unless given as flags. It never replaces an existing file without
``--force``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["add_certs", "add_demo_backend", "add_demo_client", "add_run"]

DEFAULT_CONFIG = Path("config/sentry.yaml")


def add_run(subparsers: Any) -> None:
    p = subparsers.add_parser("run", help="start the gateway (SIGHUP reloads, SIGTERM stops)")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the YAML configuration")
    p.add_argument(
        "--check",
        action="store_true",
        help="validate the configuration and the files it names, then exit (0 ok, 2 problems)",
    )
    p.set_defaults(handler=_run)


def _load(config: Path) -> Any:
    from sentry.errors import CliError
    from sentry.settings import SettingsError, load_settings

    try:
        return load_settings(config)
    except SettingsError as exc:
        raise CliError(str(exc)) from None


def _run(args: argparse.Namespace) -> int:
    from sentry.app import run
    from sentry.errors import CliError
    from sentry.settings import SettingsError
    from sentry.worker import WorkerSpec

    worker = WorkerSpec.from_env()  # started by a supervisor (gateway.workers)
    if worker is not None:  # multiprocess metrics, before any is made: no syscall per update
        from sentry.observability import mpvalues

        mpvalues.install()
    settings = _load(args.config)
    if args.check:
        return _check(args.config, settings)
    if worker is None and settings.gateway.workers > 1:
        from sentry.supervisor import supervise

        return supervise(settings, args.config)
    try:
        with asyncio.Runner(loop_factory=_loop_factory(settings.gateway.event_loop)) as runner:
            runner.run(run(settings, config=args.config, worker=worker))
    except SettingsError as exc:  # a setting only checked when used (e.g. a key file's content)
        raise CliError(str(exc)) from None
    except OSError as exc:  # anything the checks did not foresee: still one line, no traceback
        raise CliError(f"cannot start: {exc}") from None
    return 0


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop ``gateway.event_loop`` names (None: asyncio's own)."""
    if name != "uvloop":
        return None
    from sentry.errors import CliError

    try:
        import uvloop
    except ImportError:
        raise CliError(
            "gateway.event_loop: uvloop is not installed (pip install uvloop, or set asyncio)"
        ) from None
    new_loop: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return new_loop


def _check(config: Path, settings: Any) -> int:
    from sentry.preflight import preflight

    report = preflight(settings, Path("."), create=False)
    for warning in report.warnings:
        print(f"sentry: warning: {warning}", file=sys.stderr)
    for problem in report.problems:
        print(f"sentry: error: {problem}", file=sys.stderr)
    if report.problems:
        return 2
    print(f"{config}: ok")
    return 0


# --- sentry certs init | csr ---


def add_certs(subparsers: Any) -> None:
    group = subparsers.add_parser("certs", help="TLS certificates for the device listener")
    actions = group.add_subparsers(title="actions", metavar="ACTION", required=True)
    init = actions.add_parser("init", help="make a self-signed certificate and key (or a test CA)")
    _target_args(init)
    init.add_argument(
        "--ca", action="store_true", help="also make a test CA (ca.pem) that signs it"
    )
    init.add_argument("--force", action="store_true", help="replace existing files")
    init.set_defaults(handler=_certs_init)
    csr = actions.add_parser("csr", help="make a key and a certificate signing request for a CA")
    _target_args(csr)
    csr.add_argument("--san", action="append", default=[], help="another name to ask for (repeat)")
    csr.add_argument("--out", type=Path, help="the CSR file (default: the certificate path + .csr)")
    csr.add_argument(
        "--reuse-key", action="store_true", help="sign the request with the existing key"
    )
    csr.add_argument("--force", action="store_true", help="replace an existing key or CSR")
    csr.set_defaults(handler=_certs_csr)


def _target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        help=f"read gateway.tls and gateway.fqdn from it (default: {DEFAULT_CONFIG} if it exists)",
    )
    p.add_argument("--fqdn", help="the gateway's name as devices use it (default: gateway.fqdn)")
    p.add_argument("--cert", type=Path, help="certificate file (default: gateway.tls.cert)")
    p.add_argument("--key", type=Path, help="private key file (default: gateway.tls.key)")


@dataclass(frozen=True)
class _Target:
    fqdn: str
    cert: Path
    key: Path
    configured_key: Path  # gateway.tls.key of the configuration (or its default)


def _target(args: argparse.Namespace) -> _Target:
    """FQDN and file paths: flags first, then the configuration, then defaults."""
    from sentry.errors import CliError
    from sentry.settings import Settings

    config = args.config
    if config is None and DEFAULT_CONFIG.exists():
        config = DEFAULT_CONFIG
    settings = _load(config) if config is not None else None
    g = (settings or Settings()).gateway
    fqdn = args.fqdn or (g.fqdn if settings is not None else None)
    if not fqdn:
        raise CliError("give --fqdn (or --config with gateway.fqdn)")
    key = Path(g.tls.key)
    return _Target(fqdn, args.cert or Path(g.tls.cert), args.key or key, key)


def _refuse_existing(*paths: Path) -> None:
    from sentry.errors import CliError

    for path in paths:
        if path.exists():
            raise CliError(f"{path} exists; nothing was written (--force replaces it)")


def _certs_init(args: argparse.Namespace) -> int:
    from sentry.certs import make_ca, make_self_signed, make_signed, write_pair

    t = _target(args)
    ca_cert, ca_key = t.cert.with_name("ca.pem"), t.key.with_name("ca.key")
    if not args.force:
        _refuse_existing(t.cert, t.key, *((ca_cert, ca_key) if args.ca else ()))
    if args.ca:
        ca = make_ca()
        write_pair(ca, ca_cert, ca_key, overwrite=args.force)
        write_pair(make_signed(t.fqdn, ca), t.cert, t.key, overwrite=args.force)
        print(f"CA certificate: {ca_cert} (install it on test devices)")
    else:
        write_pair(make_self_signed(t.fqdn), t.cert, t.key, overwrite=args.force)
    print(f"certificate for {t.fqdn}: {t.cert}, key: {t.key} (mode 0600)")
    print("a running gateway loads them on SIGHUP")
    return 0


def _certs_csr(args: argparse.Namespace) -> int:
    from sentry.certs import make_csr, write_file, write_private
    from sentry.errors import CliError

    t = _target(args)
    out = args.out or t.cert.with_name(t.cert.name + ".csr")
    key_pem = None
    if args.reuse_key:
        try:
            key_pem = t.key.read_bytes()
        except OSError as exc:
            raise CliError(f"cannot read the key {t.key}: {exc.strerror}") from None
    elif not args.force and t.key.exists():
        raise CliError(
            f"{t.key} exists; nothing was written (--reuse-key signs the request with it, "
            "--key writes a new key elsewhere, --force replaces it)"
        )
    if not args.force:
        _refuse_existing(out)
    try:
        pair = make_csr(t.fqdn, tuple(args.san), key_pem)
    except ValueError as exc:
        raise CliError(f"{t.key}: {exc}") from None
    if key_pem is None:
        write_private(t.key, pair.key_pem, overwrite=args.force)
    write_file(out, pair.cert_pem, 0o644, overwrite=args.force)
    print(f"certificate signing request for {t.fqdn}: {out}; key: {t.key} (mode 0600)")
    step = f"send {out} to your CA, save the certificate it returns as {t.cert}"
    if t.key != t.configured_key:
        step += f", set gateway.tls.key to {t.key}"
    print(step + ", then send SIGHUP (systemctl reload sentry)")
    return 0


# --- demo tools ---


def add_demo_backend(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo-backend",
        help="run the demo EAS backend (--help for its options)",
        add_help=False,
        prefix_chars="\0",
    )
    p.add_argument("rest", nargs=argparse.REMAINDER, help="the demo backend's options")
    p.set_defaults(handler=_demo_backend)


def _demo_backend(args: argparse.Namespace) -> int:
    from sentry.testing.demo_cli import demo_backend_main

    return demo_backend_main(list(args.rest))


def add_demo_client(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo-client",
        help="sync a mailbox through the gateway (--help for its options)",
        add_help=False,
        prefix_chars="\0",
    )
    p.add_argument("rest", nargs=argparse.REMAINDER, help="the demo client's options")
    p.set_defaults(handler=_demo_client)


def _demo_client(args: argparse.Namespace) -> int:
    from sentry.testing.demo_client import demo_client_main

    return demo_client_main(list(args.rest))
