"""Bearer-token authentication for everything under ``/api/``.

Approach. One middleware guards the ``/api`` prefix only: ``/metrics``,
``/healthz`` and ``/readyz`` stay open for scrapers and probes. The token is
compared in constant time (``hmac.compare_digest``) so its value cannot be
guessed byte by byte from response times. A missing or wrong token is 401
with ``WWW-Authenticate: Bearer`` and says which of the two it was, never
anything about the token. The expected token is a fixed string (tests) or a
``TokenFile``, which follows a rotation of the token file without a restart.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from .token import TokenFile

__all__ = ["API_PREFIX", "bearer_auth", "is_api_path"]

API_PREFIX = "/api"
_REALM = 'Bearer realm="sentry-admin"'


def is_api_path(path: str) -> bool:
    """Whether ``path`` is under the authenticated ``/api/`` prefix."""
    return path == API_PREFIX or path.startswith(API_PREFIX + "/")


def _token_of(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def _unauthorized(message: str, challenge: str) -> web.Response:
    return web.json_response(
        {"error": message}, status=401, headers={"WWW-Authenticate": challenge}
    )


def bearer_auth(token: str | TokenFile) -> Middleware:
    """A middleware requiring ``Authorization: Bearer <token>`` under ``/api/``."""
    matches = token.matches if isinstance(token, TokenFile) else _fixed(token)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not is_api_path(request.path):
            return await handler(request)
        given = _token_of(request)
        if given is None:
            return _unauthorized("authentication required: Authorization: Bearer <token>", _REALM)
        if not matches(given):
            return _unauthorized("invalid token", _REALM + ', error="invalid_token"')
        return await handler(request)

    return middleware


def _fixed(token: str) -> Callable[[str], bool]:
    expected = token.encode("utf-8")
    return lambda given: hmac.compare_digest(given.encode("utf-8"), expected)
