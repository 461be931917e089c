"""The device-facing aiohttp server.

A low-level ``web.Server`` with one handler, ``handler.serve_device``, for
every path and method: the EAS path is matched case-insensitively there
(clients and load balancers disagree on its case) and every other path or
method gets a plain 404/405, never a forward. No application, router or
middleware runs per request: what they did (the connection's phases, the
request's log context, ``Expect``) is done by that one coroutine, so a held
Ping keeps fewer frames and every request does less work.
"""

from __future__ import annotations

import functools
from typing import Any

from aiohttp import web

from .guard import TRACKS_PHASES
from .handler import EAS_PATH, ProxyContext, serve_device

__all__ = ["EAS_PATH", "build_proxy_server"]


def build_proxy_server(ctx: ProxyContext, **server_args: Any) -> web.Server:
    """The device listener's server; ``ctx`` carries every dependency and
    ``server_args`` go to ``web.Server`` (``handler_cancellation``, ...).
    Parser limits and the connection gate: ``connections.py``."""
    handler = functools.partial(serve_device, ctx)
    setattr(handler, TRACKS_PHASES, True)  # serve_device starts the connection's phases
    return web.Server(handler, **server_args)
