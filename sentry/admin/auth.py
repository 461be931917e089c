"""Bearer-token authentication for everything under ``/api/``, and the two roles.

Approach. One middleware guards the ``/api`` prefix only: ``/metrics``,
``/healthz`` and ``/readyz`` stay open for scrapers and probes (the web
console guards its own pages with a session: ``sentry.admin.console``). The
token is compared in constant time (``hmac.compare_digest``) so its value
cannot be guessed byte by byte from response times. A missing or wrong token
is 401 with ``WWW-Authenticate: Bearer`` and says which of the two it was,
never anything about the token.

Two tokens, two roles (``AdminTokens``): the admin token (``admin.token_file``)
may do everything; the optional read-only token
(``admin.readonly_token_file``) may call every route that changes nothing.
The middleware only finds the role and puts it on the request; the API
pipeline refuses a changing route for ``Role.READ_ONLY`` (403) for API
calls and console actions alike (``api.check_role``). Each token is a fixed
string (tests) or a ``TokenFile``, which follows a rotation of its file
without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from .token import TokenFile

__all__ = [
    "API_PREFIX",
    "ROLE",
    "AdminTokens",
    "Role",
    "bearer_auth",
    "is_api_path",
    "role_of_request",
]

API_PREFIX = "/api"
_REALM = 'Bearer realm="sentry-admin"'
_MAX_TOKEN = 1024


class Role(StrEnum):
    """What a token (or a console session signed in with it) may do."""

    ADMIN = "admin"  # everything
    READ_ONLY = "read-only"  # every route that changes nothing


ROLE: web.RequestKey[Role] = web.RequestKey("sentry_admin_role", Role)
"""The request key holding the caller's ``Role`` (set by the auth middleware)."""


def _fixed(token: str) -> Callable[[str], bool]:
    expected = token.encode("utf-8")
    return lambda given: hmac.compare_digest(given.encode("utf-8"), expected)


def _matcher(token: str | TokenFile) -> Callable[[str], bool]:
    return token.matches if isinstance(token, TokenFile) else _fixed(token)


def _current(token: str | TokenFile) -> str:
    return token.current() if isinstance(token, TokenFile) else token


@dataclass(frozen=True)
class AdminTokens:
    """The admin token and the optional read-only token."""

    admin: str | TokenFile
    readonly: str | TokenFile | None = None

    def role_of(self, given: str) -> Role | None:
        """The role ``given`` grants, or None (constant time per token)."""
        if not given or len(given) > _MAX_TOKEN:
            return None
        if _matcher(self.admin)(given):
            return Role.ADMIN
        if self.readonly is not None and _matcher(self.readonly)(given):
            return Role.READ_ONLY
        return None

    def generation(self, role: Role) -> str:
        """A digest of the token ``role`` signs in with now: it changes when the
        token is rotated, which ends the console sessions signed in before."""
        token = self.admin if role is Role.ADMIN else self.readonly
        text = "" if token is None else _current(token)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    @classmethod
    def of(cls, token: str | TokenFile | AdminTokens) -> AdminTokens:
        """``token`` as ``AdminTokens`` (a single token: no read-only role)."""
        return token if isinstance(token, AdminTokens) else cls(token)


def is_api_path(path: str) -> bool:
    """Whether ``path`` is under the authenticated ``/api/`` prefix."""
    return path == API_PREFIX or path.startswith(API_PREFIX + "/")


def role_of_request(request: web.Request) -> Role:
    """The role the auth middleware found (admin where none was needed: tests
    registering routes without the middleware)."""
    role: Role = request.get(ROLE, Role.ADMIN)
    return role


def _token_of(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def _unauthorized(message: str, challenge: str) -> web.Response:
    return web.json_response(
        {"error": message}, status=401, headers={"WWW-Authenticate": challenge}
    )


def bearer_auth(token: str | TokenFile | AdminTokens) -> Middleware:
    """A middleware requiring ``Authorization: Bearer <token>`` under ``/api/``;
    it records the token's role on the request (``ROLE``)."""
    tokens = AdminTokens.of(token)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not is_api_path(request.path):
            return await handler(request)
        given = _token_of(request)
        if given is None:
            return _unauthorized("authentication required: Authorization: Bearer <token>", _REALM)
        role = tokens.role_of(given)
        if role is None:
            return _unauthorized("invalid token", _REALM + ', error="invalid_token"')
        request[ROLE] = role
        return await handler(request)

    return middleware
