"""``/metrics``, ``/healthz`` and ``/readyz``: no token needed, no identities inside.

``/healthz`` says the process is alive and its event loop turns. ``/readyz``
says it can serve devices: the state is loaded, the device listener is up and
at least one server of every pool is healthy; otherwise 503 with the reasons.
Either way it may carry ``notes``: what does not stop serving but an operator
should know (a directory sync failing: requests are decided from the last
sync, so the gateway stays ready).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

__all__ = ["health_routes"]


def health_routes(
    registry: CollectorRegistry,
    readiness: Callable[[], list[str]],
    notes: Callable[[], list[str]] = list,
    identity: Mapping[str, Any] | None = None,
) -> list[web.RouteDef]:
    """Routes for the admin app; ``readiness`` returns what is not ready (empty =
    ready), ``notes`` what an operator should know that does not stop serving
    (``/readyz`` lists them under ``notes``, ready or not). ``identity`` is
    added to the ``/healthz`` and ``/readyz`` bodies (under ``gateway.workers``:
    which worker answered, ``sentry.worker``)."""
    who = dict(identity or {})

    async def metrics(_request: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", **who})

    async def readyz(_request: web.Request) -> web.Response:
        problems, noted = readiness(), notes()
        extra = {**({"notes": noted} if noted else {}), **who}
        if problems:
            body = {"status": "not ready", "problems": problems, **extra}
            return web.json_response(body, status=503)
        return web.json_response({"status": "ready", **extra})

    return [
        web.get("/metrics", metrics),
        web.get("/healthz", healthz),
        web.get("/readyz", readyz),
    ]
