"""``sentry demo-backend``: run the demo EAS backend as a standalone server.

Approach. ``demo_backend_main(argv)`` parses the options into a
``BackendConfig`` (users as ``name:password[@domain]``, email
``name@domain``), builds the TLS context when a certificate is given, and runs
``serve_forever`` until SIGINT/SIGTERM, which stop the server cleanly (held
Pings are answered first). The control API (``/_demo/inject``,
``/_demo/stats``) lets a shell drive it with curl.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import ssl
import sys
from collections.abc import Callable
from pathlib import Path

from sentry.certs import server_ssl_context

from .backend import RunningBackend, start_backend
from .state import BackendConfig, MailboxSpec

__all__ = ["backend_parser", "demo_backend_main", "parse_users", "serve_forever"]

DEFAULT_DOMAIN = "example.com"


def parse_users(text: str) -> tuple[MailboxSpec, ...]:
    """``alice:secret@example.com,bob:pw`` -> mailbox specs (domain defaults to example.com)."""
    specs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, rest = item.partition(":")
        if not name or not sep or not rest:
            raise ValueError(f"user {item!r} is not name:password[@domain]")
        password, at, domain = rest.rpartition("@") if "@" in rest else (rest, "", "")
        email = f"{name}@{domain if at else DEFAULT_DOMAIN}"
        specs.append(MailboxSpec(name, password, email, f"{name.title()} (demo)"))
    if not specs:
        raise ValueError("no users given")
    return tuple(specs)


async def serve_forever(
    config: BackendConfig,
    host: str = "127.0.0.1",
    port: int = 8081,
    ssl_context: ssl.SSLContext | None = None,
    *,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[RunningBackend], None] | None = None,
) -> None:
    """Serve until ``stop`` is set (or the task is cancelled), then shut down cleanly.

    ``on_ready`` is called once the port is bound (it learns the port when 0 was asked).
    """
    stop = stop or asyncio.Event()
    async with start_backend(config, host, port, ssl_context, access_log=True) as backend:
        users = ", ".join(m.email for m in config.mailboxes)
        print(f"demo backend ({config.backend_type}) on {backend.eas_url} for {users}", flush=True)
        if on_ready is not None:
            on_ready(backend)
        await stop.wait()


def backend_parser() -> argparse.ArgumentParser:
    """The options of ``sentry demo-backend``."""
    p = argparse.ArgumentParser(
        prog="sentry demo-backend",
        description="Run the demo EAS backend.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8081, help="port to listen on (0: any free port)")
    p.add_argument("--type", dest="backend_type", default="exchange", help="backend type label")
    p.add_argument("--users", default="alice:secret,bob:secret", help="name:password[@domain],...")
    p.add_argument("--messages", type=int, default=3, help="seeded Inbox messages per user")
    p.add_argument("--min-heartbeat", type=int, default=60, help="shortest Ping heartbeat accepted")
    p.add_argument("--max-heartbeat", type=int, default=3540, help="longest Ping heartbeat")
    p.add_argument("--no-provisioning", action="store_true", help="do not require Provision")
    p.add_argument("--tls-cert", type=Path, help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--tls-key", type=Path, help="the certificate's private key (PEM)")
    return p


async def _run(config: BackendConfig, args: argparse.Namespace, tls: ssl.SSLContext | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await serve_forever(config, args.host, args.port, tls, stop=stop)


def demo_backend_main(argv: list[str]) -> int:
    """Entry point of ``sentry demo-backend``; returns the exit status."""
    args = backend_parser().parse_args(argv)
    try:
        config = BackendConfig(
            backend_type=args.backend_type,
            mailboxes=parse_users(args.users),
            seed_messages=args.messages,
            require_provisioning=not args.no_provisioning,
            min_heartbeat=args.min_heartbeat,
            max_heartbeat=args.max_heartbeat,
        )
        if (args.tls_cert is None) != (args.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        tls = server_ssl_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    except (ValueError, OSError, ssl.SSLError) as exc:
        print(f"sentry demo-backend: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_run(config, args, tls))
    except OSError as exc:
        print(f"sentry demo-backend: {exc}", file=sys.stderr)
        return 1
    return 0
