"""The console's gate: a session for every page, a CSRF token for every change.

Approach. One middleware runs before every console handler (every path but
``/api/``, ``/metrics``, ``/healthz`` and ``/readyz``):

- the sign-in page and the static files are open; everything else needs a
  live session (``sessions.py``), found by the cookie's id. Without one a
  page (GET) redirects to the sign-in page and a change (any other method)
  is refused with 403: a change never starts from a redirect;
- a change also needs the session's CSRF token in its form (``csrf``,
  compared in constant time) and must not come from another site (an
  ``Origin`` other than this listener's, or ``Sec-Fetch-Site`` saying
  cross-site, is refused before the token is even read). The cookie is
  ``SameSite=Strict`` and ``HttpOnly`` besides, so a forged request from
  another site carries no session at all;
- every answer (pages, redirects, refusals, errors, static files) carries
  the strict headers of ``render.SECURITY_HEADERS``; an unexpected error is
  logged and answered with a plain error page, never a traceback.

What a session may do is not decided here: the admin API's role rule refuses
a change of a read-only session (``api.check_role``), for the console as for
the API; the pages only hide the forms it could not use.
"""

from __future__ import annotations

from urllib.parse import urlencode

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from sentry.admin.auth import is_api_path

from .render import SECURITY_HEADERS, redirect, render
from .sessions import Session
from .state import SESSION, Console, console_of

__all__ = [
    "OPEN_PATHS",
    "STATIC_PREFIX",
    "console_guard",
    "find_session",
    "is_console_path",
    "refuse",
    "same_site",
]

log = structlog.get_logger("sentry.admin")

STATIC_PREFIX = "/static/"
OPEN_PATHS = frozenset({"/signin"})
_OPS_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})
_SAFE_METHODS = frozenset({"GET", "HEAD"})


def is_console_path(path: str) -> bool:
    """Whether the console (not the API, not the scrapers' paths) serves ``path``."""
    return not is_api_path(path) and path not in _OPS_PATHS


def same_site(request: web.Request, console: Console) -> bool:
    """False when the browser says the request comes from another site."""
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    scheme = "https" if console.secure else "http"
    return origin == f"{scheme}://{request.host}"


async def refuse(request: web.Request, reason: str, message: str) -> web.Response:
    """403 for a change the gate refuses, with a log event saying why."""
    log.warning("console_refused", reason=reason, method=request.method, path=request.path)
    return await render(request, "error.html", status=403, title="Refused", message=message)


def find_session(request: web.Request, console: Console) -> Session | None:
    """The live session named by the request's cookie, or None."""
    sid = request.cookies.get(console.cookie)
    seen = console.sessions.peek(sid)
    if seen is None:
        return None
    generation = console.tokens.generation(seen.role)
    return console.sessions.get(sid, generation, console.clock())


async def _gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    console = console_of(request)
    if request.path.startswith(STATIC_PREFIX) or request.path in OPEN_PATHS:
        return await handler(request)
    session = find_session(request, console)
    if request.method in _SAFE_METHODS:
        if session is None:
            return redirect("/signin?" + _next(request))
    else:
        if not same_site(request, console):
            return await refuse(request, "cross_site", "This change came from another site.")
        if session is None:
            return await refuse(request, "no_session", "Sign in first: this change has no session.")
        form = await request.post()
        given = form.get("csrf")
        if not session.csrf_ok(given if isinstance(given, str) else None):
            return await refuse(request, "csrf", "The form's CSRF token is missing or wrong.")
    request[SESSION] = session
    return await handler(request)


def _next(request: web.Request) -> str:
    return urlencode({"next": request.path_qs})


def console_guard() -> Middleware:
    """The gate middleware (see the module comment)."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not is_console_path(request.path):
            return await handler(request)
        try:
            response = await _gate(request, handler)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            title = exc.reason or "Error"
            response = await render(
                request, "error.html", status=exc.status, title=title, message=""
            )
        except Exception:
            log.exception("console_failed", method=request.method, path=request.path)
            message = "Internal error (see the gateway log)."
            response = await render(
                request, "error.html", status=500, title="Error", message=message
            )
        response.headers.update(SECURITY_HEADERS)
        return response

    return guard
