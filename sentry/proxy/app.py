"""The device-facing aiohttp application.

One route catches every path so the EAS path can be matched case-insensitively
(clients and load balancers disagree on its case) and every other path or
method gets a plain 404/405 — never a forward.
"""

from __future__ import annotations

from aiohttp import web

from sentry.eas import responses

from .guard import track_phases
from .handler import PROXY, ProxyContext, eas_handler, request_context

__all__ = ["EAS_PATH", "PROXY", "build_proxy_app"]

EAS_PATH = "/microsoft-server-activesync"
_METHODS = ("POST", "OPTIONS")


async def _dispatch(request: web.Request) -> web.StreamResponse:
    if request.path.rstrip("/").lower() != EAS_PATH:
        return _to_web(responses.error(404, "not found"))
    if request.method not in _METHODS:
        allow = (("Allow", responses.ALLOW),)
        return _to_web(responses.error(405, "method not allowed", allow))
    return await eas_handler(request)


def _to_web(resp: responses.Response) -> web.Response:
    return web.Response(
        status=resp.status, reason=resp.reason, headers=resp.headers, body=resp.body
    )


def build_proxy_app(ctx: ProxyContext) -> web.Application:
    """The device listener's application; ``ctx`` carries every dependency."""
    # parser limits: connections.py; the request's log context: handler.request_context
    app = web.Application(middlewares=[track_phases, request_context])
    app[PROXY] = ctx
    app.router.add_route("*", "/{tail:.*}", _dispatch)
    return app
