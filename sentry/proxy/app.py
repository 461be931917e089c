"""The device-facing server.

The gateway's own HTTP/1.1 server (``h1server.py``) with one handler,
``handler.serve_device``, for every path and method: the EAS path is matched
case-insensitively there (clients and load balancers disagree on its case)
and every other path or method gets a plain 404/405, never a forward. No
application, router or middleware runs per request, and a held Ping keeps
only the connection, its request and the handler's frames.
"""

from __future__ import annotations

import functools

from .connections import parser_limits
from .h1server import DeviceServer
from .handler import EAS_PATH, ProxyContext, serve_device

__all__ = ["EAS_PATH", "build_proxy_server"]


def build_proxy_server(ctx: ProxyContext) -> DeviceServer:
    """The device listener's server; ``ctx`` carries every dependency. The
    connection gate (caps, clocks, TLS): ``connections.py``."""
    return DeviceServer(
        functools.partial(serve_device, ctx), parser_limits(ctx.settings.header_limits)
    )
