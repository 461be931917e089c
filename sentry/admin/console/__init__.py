"""The admin web console: server-rendered pages on the admin listener.

Approach, and why. The console is a set of server-rendered HTML pages
(Jinja2 templates, one stylesheet, no JavaScript at all) served by the admin
listener next to ``/api/``. Each page handler calls the admin API
*in-process* through ``api.invoke``, by method and URL, exactly as the CLI
calls it over HTTP: the same route table, the same input checks, the same
handlers, the same role rule and the same audit entries and change log. So
there is no second code path, and a page can show and do only what the API
can. We chose this over a static JavaScript front end calling ``/api/``
because it needs no build step and nothing at run time but the package's
own files (works offline), because ``/api/`` then keeps its bearer-token
authentication only (no cookie ever authenticates an API call, so the API
has no CSRF surface), and because a page without script can send a
Content-Security-Policy that forbids every script: an injected payload in a
DeviceType, a User-Agent or DeviceInformation (device-controlled text) is
escaped by the templates and could not run even if it were not.

Modules: ``state`` (the console's parts and ``call_api``), ``sessions``
(server-side sessions), ``guard`` (the middleware: sessions, CSRF, strict
headers), ``signin``, ``pages`` (GET views), ``changes`` (forms that change
something), ``forms`` (form fields -> API JSON), ``render`` (templates).
Templates and the stylesheet are package data (``templates/``, ``static/``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources

from aiohttp import web
from aiohttp.typedefs import Middleware

from sentry.admin.auth import AdminTokens
from sentry.admin.context import AdminContext
from sentry.settings import ConsoleSettings

from . import changes, pages, signin
from .guard import STATIC_PREFIX, console_guard
from .state import CONSOLE, Console

__all__ = ["STATIC_FILES", "add_console", "console_middlewares"]

STATIC_FILES = {"console.css": "text/css", "sentry.svg": "image/svg+xml"}
"""The static files the console serves (package data), by name."""


def console_middlewares() -> list[Middleware]:
    """The console's middleware (after the API's: it ignores ``/api/``)."""
    return [console_guard()]


def _file(body: bytes, media_type: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def serve(_request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=media_type)

    return serve


def _static_routes() -> list[web.RouteDef]:
    """The static files, read once from the package data."""
    folder = resources.files(__package__) / "static"
    return [
        web.get(STATIC_PREFIX + name, _file((folder / name).read_bytes(), media_type))
        for name, media_type in STATIC_FILES.items()
    ]


def add_console(
    app: web.Application,
    ctx: AdminContext,
    tokens: AdminTokens,
    settings: ConsoleSettings,
    *,
    secure: bool,
    clock: Callable[[], float] | None = None,
) -> Console:
    """Serve the console on ``app`` (which must use ``console_middlewares``)."""
    console = Console(ctx, tokens, settings, secure)
    if clock is not None:
        console.clock = clock
    app[CONSOLE] = console
    app.add_routes([*signin.ROUTES, *pages.ROUTES, *changes.ROUTES, *_static_routes()])
    return console
