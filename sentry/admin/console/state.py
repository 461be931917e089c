"""What every console handler works with, and its one way to call the API.

Approach. ``Console`` holds the admin context, the two tokens and the
session table; it is stored on the admin app under ``CONSOLE`` and the
request's session (found by the guard middleware) under ``SESSION``.
``call_api`` is the only way a page reads or changes anything: it calls the
admin API in-process (``api.invoke``: the route the URL names, its checks,
its handler, its role rule and change log) as the signed-in administrator
(their name is the audit log's actor) with their session's role.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from sentry.admin.api import invoke
from sentry.admin.auth import AdminTokens
from sentry.admin.context import AdminContext
from sentry.settings import ConsoleSettings

from .sessions import Session, Sessions

__all__ = [
    "CONSOLE",
    "SESSION",
    "Console",
    "call_api",
    "console_of",
    "form_fields",
    "session_of",
]


@dataclass(eq=False)
class Console:
    """The console's parts (see the module comment)."""

    ctx: AdminContext
    tokens: AdminTokens
    settings: ConsoleSettings
    secure: bool  # the admin listener serves TLS: cookies are Secure
    clock: Callable[[], float] = time.monotonic
    sessions: Sessions = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.sessions = Sessions(
            idle=s.session_idle_seconds, lifetime=s.session_max_seconds, limit=s.max_sessions
        )

    @property
    def cookie(self) -> str:
        """The session cookie's name (``__Host-`` bound to this origin under TLS)."""
        return "__Host-sentry_console" if self.secure else "sentry_console"


CONSOLE: web.AppKey[Console] = web.AppKey("sentry_console", Console)
SESSION: web.RequestKey[Session] = web.RequestKey("sentry_console_session", Session)


def console_of(request: web.Request) -> Console:
    return request.app[CONSOLE]


def session_of(request: web.Request) -> Session:
    """The signed-in session (the guard lets no other request reach a page)."""
    return request[SESSION]


async def call_api(
    request: web.Request,
    method: str,
    url: str,
    *,
    query: Mapping[str, str] | None = None,
    body: Mapping[str, Any] | None = None,
) -> Any:
    """Call the admin API route ``method url`` as the signed-in administrator."""
    session = session_of(request)
    ctx = console_of(request).ctx
    return await invoke(
        ctx, method, url, query=query, body=body, actor=session.actor, role=session.role
    )


async def form_fields(request: web.Request) -> dict[str, str]:
    """The request's form fields that are text (a file upload is ignored)."""
    form = await request.post()
    return {k: v for k, v in form.items() if isinstance(v, str)}
