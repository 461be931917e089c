"""Sign-in with an admin token, sign-out; the token never leaves the form.

Approach. The sign-in form asks for a token (the admin token or the
read-only one) and the administrator's name, which becomes the actor of
every change they make (as ``X-Sentry-Actor`` does for the API). A valid
token creates a new server-side session (``sessions.py``) whose id goes into
an ``HttpOnly``, ``SameSite=Strict`` cookie (``Secure`` and ``__Host-``
prefixed when the admin listener serves TLS); the token itself is neither
stored in the session nor logged. The form is protected against login CSRF
by a one-time value that is both in a hidden field and in a short-lived
cookie of its own (double submit). ``next`` only ever leads to a path of
this console. Sign-out ends the server-side session (a stolen cookie is
useless afterwards) and clears the cookie.
"""

from __future__ import annotations

import hmac
import secrets

import structlog
from aiohttp import web

from sentry.admin.api import check_actor
from sentry.admin.errors import BadRequest

from .guard import find_session, refuse, same_site
from .render import redirect, render
from .state import Console, console_of, form_fields, session_of

__all__ = ["ROUTES", "local_next"]

log = structlog.get_logger("sentry.admin")
_FORM_SECONDS = 900


def local_next(raw: object) -> str:
    """Where to go after signing in: a path of this console, else ``/``."""
    text = raw if isinstance(raw, str) else ""
    bad = not text.startswith("/") or text.startswith("//") or "\\" in text
    if bad or not text.isprintable() or len(text) > 2048:
        return "/"
    return text


def _nonce_cookie(console: Console) -> str:
    return "__Host-sentry_signin" if console.secure else "sentry_signin"


async def _form(
    request: web.Request, *, next_path: str, error: str | None = None, status: int = 200
) -> web.Response:
    console = console_of(request)
    nonce = secrets.token_urlsafe(32)
    response = await render(
        request,
        "signin.html",
        status=status,
        nonce=nonce,
        next=next_path,
        error=error,
        readonly=console.tokens.readonly is not None,
    )
    response.set_cookie(
        _nonce_cookie(console),
        nonce,
        max_age=_FORM_SECONDS,
        path="/",
        secure=console.secure,
        httponly=True,
        samesite="Strict",
    )
    return response


async def _signin_page(request: web.Request) -> web.StreamResponse:
    if find_session(request, console_of(request)) is not None:
        return redirect(local_next(request.query.get("next")))
    return await _form(request, next_path=local_next(request.query.get("next")))


def _forget(response: web.StreamResponse, console: Console, name: str) -> None:
    """Expire cookie ``name`` (with the attributes it was set with: a
    ``__Host-`` cookie is only replaced by a Secure one)."""
    response.del_cookie(name, path="/", secure=console.secure, httponly=True, samesite="Strict")


async def _signin(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    form = await form_fields(request)
    next_path = local_next(form.get("next"))
    nonce = request.cookies.get(_nonce_cookie(console), "")
    given = form.get("nonce", "")
    if not same_site(request, console):
        return await refuse(request, "cross_site", "This sign-in came from another site.")
    if not nonce or not hmac.compare_digest(given.encode(), nonce.encode()):
        log.warning("console_refused", reason="signin_form", method="POST", path=request.path)
        expired = "The sign-in form expired or was not this console's: sign in again."
        return await _form(request, next_path=next_path, error=expired, status=403)
    try:
        actor = check_actor(form.get("name", ""), "name")
    except BadRequest:
        problem = "Give your name (1 to 128 printable characters): the audit log shows it."
        return await _form(request, next_path=next_path, error=problem, status=400)
    role = console.tokens.role_of(form.get("token", "").strip())
    if role is None:
        log.warning("console_signin_refused", actor=actor, client=request.remote)
        return await _form(request, next_path=next_path, error="Wrong token.", status=401)
    session = console.sessions.create(role, actor, console.tokens.generation(role), console.clock())
    log.info("console_signin", actor=actor, role=role.value, client=request.remote)
    response = redirect(next_path)
    response.set_cookie(
        console.cookie,
        session.id,
        path="/",
        secure=console.secure,
        httponly=True,
        samesite="Strict",
    )
    _forget(response, console, _nonce_cookie(console))
    return response


async def _signout(request: web.Request) -> web.StreamResponse:
    console, session = console_of(request), session_of(request)
    console.sessions.end(session.id)
    log.info("console_signout", actor=session.actor, role=session.role.value)
    response = redirect("/signin")
    _forget(response, console, console.cookie)
    return response


ROUTES = [
    web.get("/signin", _signin_page),
    web.post("/signin", _signin),
    web.post("/signout", _signout),
]
