"""``python -m bench.backend_runner``: the demo EAS backend as a bench server.

Approach. The same application as ``sentry demo-backend``
(``sentry.testing.backend.build_backend_app``), started for load: many
mailboxes (``user000000``.. with one password), no access log, no
provisioning requirement (the mix carries no policy key), a low minimum
heartbeat, and one listening socket per ``--hosts`` address on the same port
(several loopback addresses give the gateway more source ports towards it,
see bench/README.md). It prints one JSON line with its port once it listens
and serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal

from aiohttp import web

from bench.eas_mix import DOMAIN, PASSWORD
from bench.proc import raise_nofile
from sentry.testing.backend import build_backend_app
from sentry.testing.state import BackendConfig, MailboxSpec

__all__ = ["main"]


def config(users: int, min_heartbeat: int) -> BackendConfig:
    boxes = tuple(
        MailboxSpec(f"user{i:06d}", PASSWORD, f"user{i:06d}@{DOMAIN}", f"User {i}")
        for i in range(users)
    )
    return BackendConfig(
        mailboxes=boxes, seed_messages=3, require_provisioning=False, min_heartbeat=min_heartbeat
    )


async def serve(args: argparse.Namespace) -> None:
    app = build_backend_app(config(args.users, args.min_heartbeat))
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    hosts = args.hosts.split(",")
    port = args.port
    for host in hosts:
        site = web.TCPSite(runner, host, port, backlog=4096)
        await site.start()
        port = runner.addresses[0][1]
    print(json.dumps({"event": "ready", "port": port, "hosts": hosts}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.backend_runner")
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--hosts", default="127.0.0.1", help="comma-separated loopback addresses")
    p.add_argument("--min-heartbeat", type=int, default=1)
    args = p.parse_args()
    raise_nofile()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))


if __name__ == "__main__":
    main()
