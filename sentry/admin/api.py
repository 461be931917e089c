"""The admin REST API: the route table, the request pipeline, error answers.

Approach. ``ROUTES`` is every route of every admin module plus the OpenAPI
document itself; ``add_api`` registers exactly those, each behind one
pipeline: check the path, query and body against the route's specs
(``schema.py``), take the actor from ``X-Sentry-Actor`` (default
``"admin"``), call the handler with a ``Call``, answer JSON. The error
middleware is the one place where ``ApiError``, the policy's ``AdminError``,
the store's ``StoreUnavailable`` (503: nothing was changed) and aiohttp's own
404/405/413 become ``{"error": ..., "fields": ...}`` answers; the auth
middleware runs before it, so nothing under ``/api/`` answers without the
token, not even a 404. A changing route called with the read-only token is
refused (403) before its handler runs.

``invoke`` is the same pipeline without HTTP: the web console
(``sentry.admin.console``) calls the API through it, by method and URL, so a
page shows and changes exactly what the API does (same checks, same
handlers, same role rule, same change log), with no second code path.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler as AiohttpHandler
from aiohttp.typedefs import Middleware

from sentry.buildinfo import version
from sentry.policy import PolicyError
from sentry.store.base import StoreUnavailable

from . import (
    access_rules,
    associations,
    audit,
    backend_types,
    devices,
    directory,
    directory_sync,
    easpolicies,
    exports,
    prefs,
    push,
    redirects,
    storeview,
)
from .auth import AdminTokens, Role, bearer_auth, is_api_path, role_of_request
from .context import AdminContext
from .errors import ApiError, BadRequest, Forbidden, NotFound, Unavailable, from_policy
from .openapi import openapi_document
from .schema import Call, Fields, Route, parse_body, parse_path, parse_query
from .token import TokenFile
from .views import SCHEMAS

__all__ = [
    "ADMIN_CONTEXT",
    "MAX_BODY_BYTES",
    "MAX_DEPTH",
    "MAX_LINE_BYTES",
    "ROUTES",
    "SERVER_LIMITS",
    "add_api",
    "api_error",
    "api_middlewares",
    "check_actor",
    "check_role",
    "find_route",
    "invoke",
    "openapi",
]

log = structlog.get_logger("sentry.admin")
ADMIN_CONTEXT: web.AppKey[AdminContext] = web.AppKey("admin_context", AdminContext)
ACTOR_HEADER = "X-Sentry-Actor"
_MAX_ACTOR = 128
MAX_BODY_BYTES = 1024**2
"""The largest request body (aiohttp's ``client_max_size``, its default): 413 beyond."""
MAX_DEPTH = 32
"""The deepest nesting of arrays and objects a JSON body may have."""
MAX_LINE_BYTES = 64 * 1024
"""The longest request line the admin listener reads (aiohttp's default is 8190):
long enough for every URL the document allows (a test checks it), so a valid
request never meets the HTTP parser's plain-text 400."""
SERVER_LIMITS: dict[str, Any] = {"max_line_size": MAX_LINE_BYTES}
"""Keyword arguments for the admin listener's ``web.AppRunner``."""
_TOO_DEEP = object()


async def _get_openapi(call: Call) -> dict[str, Any]:
    return openapi()


_OPENAPI = Route(
    "GET",
    "/api/openapi.json",
    _get_openapi,
    "This document: the OpenAPI 3 description of the admin API",
    "meta",
    response="OpenApi",
)

ROUTES: tuple[Route, ...] = (
    *exports.ROUTES,
    *associations.ROUTES,
    *access_rules.ROUTES,
    *directory.ROUTES,
    *devices.ROUTES,
    *directory_sync.ROUTES,
    *backend_types.ROUTES,
    *push.ROUTES,
    *prefs.ROUTES,
    *audit.ROUTES,
    *redirects.ROUTES,
    *easpolicies.ROUTES,
    *storeview.ROUTES,
    _OPENAPI,
)
"""Every admin API route: what is served is what is documented."""


def openapi() -> dict[str, Any]:
    """The OpenAPI 3 document of ``ROUTES``."""
    schemas = {**SCHEMAS, **redirects.SCHEMAS, **directory_sync.SCHEMAS, **easpolicies.SCHEMAS}
    return openapi_document(ROUTES, schemas, title="Sentry admin API", version=version())


def api_middlewares(token: str | TokenFile | AdminTokens) -> list[Middleware]:
    """Authentication first, then JSON error answers (both for ``/api/`` only)."""
    return [bearer_auth(token), _errors]


def add_api(app: web.Application, ctx: AdminContext, routes: Sequence[Route] = ROUTES) -> None:
    """Register ``routes`` on ``app`` (which must use ``api_middlewares``).

    Paths are registered most specific first (more fixed segments), each with
    a catch-all answering 405 and its documented methods in ``Allow``: a URL
    two templates match (``/api/associations/actions/block`` against
    ``/api/associations/{device_id}/{user}``) belongs to the more specific
    one, for every method, so ``Allow`` is what its document says."""
    app[ADMIN_CONTEXT] = ctx
    by_path: dict[str, list[Route]] = {}
    for route in routes:
        by_path.setdefault(route.path, []).append(route)
    for path in sorted(by_path, key=_specificity):
        for route in by_path[path]:
            app.router.add_route(route.method, path, _endpoint(route))
        app.router.add_route("*", path, _not_allowed(sorted(r.method for r in by_path[path])))


def _specificity(path: str) -> tuple[int, str]:
    fixed = sum(1 for part in path.split("/") if part and not part.startswith("{"))
    return -fixed, path


def _not_allowed(methods: list[str]) -> AiohttpHandler:
    async def not_allowed(request: web.Request) -> web.StreamResponse:
        raise web.HTTPMethodNotAllowed(request.method, methods)

    return not_allowed


def check_role(route: Route, role: Role) -> None:
    """The one role rule: the read-only role calls only routes that change nothing."""
    if role is Role.READ_ONLY and (route.changes or route.method != "GET"):
        raise Forbidden("the read-only token cannot change anything")


def _endpoint(route: Route) -> AiohttpHandler:
    async def endpoint(request: web.Request) -> web.StreamResponse:
        check_role(route, role_of_request(request))
        ctx = request.app[ADMIN_CONTEXT]
        path = parse_path(request.match_info, route.path_fields)
        query = parse_query(request.query, route.query)
        body = await _body(request, route.body)
        result = await _run(route, Call(ctx, path, query, body, _actor(request)))
        if isinstance(result, exports.Stream):
            return await _stream(request, result)
        return web.json_response(result, status=route.status)

    endpoint.__name__ = route.handler.__name__
    return endpoint


async def _run(route: Route, call: Call) -> Any:
    result = await route.handler(call)
    if route.changes:
        _log_change(route, call, result)
    return result


def _pattern(path: str) -> re.Pattern[str]:
    """``/api/users/{principal}`` as ``^/api/users/(?P<principal>[^/]+)$``."""
    parts = [
        f"(?P<{part[1:-1]}>[^/]+)" if part.startswith("{") else re.escape(part)
        for part in path.split("/")
    ]
    return re.compile("^" + "/".join(parts) + "$")


_MATCHERS = [(r, _pattern(r.path)) for r in ROUTES]


def _fixed_segments(route: Route) -> int:
    return sum(1 for part in route.path.split("/") if part and not part.startswith("{"))


def find_route(method: str, url: str) -> tuple[Route, dict[str, str]]:
    """The route serving ``method url`` (most fixed segments first, as the
    router does) and its path parameters, percent-decoded; ``NotFound``."""
    found = [
        (route, m)
        for route, pattern in _MATCHERS
        if route.method == method and (m := pattern.match(url)) is not None
    ]
    if not found:
        raise NotFound(f"no admin API route {method} {url}")
    route, m = max(found, key=lambda rm: _fixed_segments(rm[0]))
    return route, {k: unquote(v) for k, v in m.groupdict().items()}


async def invoke(
    ctx: AdminContext,
    method: str,
    url: str,
    *,
    query: Mapping[str, str] | None = None,
    body: Mapping[str, Any] | None = None,
    actor: str,
    role: Role,
) -> Any:
    """Call an API route in-process: the route ``method url`` finds, the same
    checks (role, path, query, body), handler and change log as over HTTP.
    Raises what the handler raises (``ApiError``, ``PolicyError``, ...):
    ``api_error`` turns any of them into the answer the API would give."""
    route, params = find_route(method, url)
    check_role(route, role)
    path = parse_path(params, route.path_fields)
    checked_query = parse_query(query or {}, route.query)
    checked_body = {} if route.body is None else parse_body(dict(body or {}), route.body)
    return await _run(route, Call(ctx, path, checked_query, checked_body, actor))


async def _stream(request: web.Request, stream: exports.Stream) -> web.StreamResponse:
    """Write a streamed answer chunk by chunk."""
    disposition = f'attachment; filename="{stream.filename}"'
    headers = {"Content-Type": stream.media_type, "Content-Disposition": disposition}
    response = web.StreamResponse(headers=headers)
    response.enable_chunked_encoding()
    await response.prepare(request)
    async for chunk in stream.chunks:
        await response.write(chunk)
    await response.write_eof()
    return response


def _log_change(route: Route, call: Call, result: Any) -> None:
    """One event per changing call; a dry run says so and how many rows it would change."""
    fields = {"actor": call.actor, "method": route.method, "route": route.path, **call.path}
    if isinstance(result, dict) and result.get("dry_run") is True:
        log.info("admin_dry_run", dry_run=True, would_change=len(result["changed"]), **fields)
    else:
        log.info("admin_change", **fields)


async def _body(request: web.Request, spec: Fields | None) -> dict[str, Any]:
    if spec is None:
        return {}
    raw = await request.read()  # at most MAX_BODY_BYTES: aiohttp answers 413 beyond
    if not raw.strip():
        return parse_body({}, spec)
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest("malformed JSON", {"body": f"not valid JSON: {exc}"}) from None
    except RecursionError:  # nested beyond the parser's own limit
        data = _TOO_DEEP
    if data is _TOO_DEEP or _depth(data) > MAX_DEPTH:
        problem = f"nested deeper than {MAX_DEPTH} levels"
        raise BadRequest("the body is nested too deeply", {"body": problem})
    return parse_body(data, spec)


def _depth(data: Any) -> int:
    """How deeply arrays and objects nest in ``data`` (iterative; stops past the limit)."""
    deepest, stack = 0, [(data, 1)]
    while stack and deepest <= MAX_DEPTH:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            deepest = max(deepest, depth)
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _actor(request: web.Request) -> str:
    raw = request.headers.get(ACTOR_HEADER)
    if raw is None:
        return "admin"
    return check_actor(raw, ACTOR_HEADER)


def check_actor(raw: str, field: str) -> str:
    """An actor name as the audit log keeps it: 1 to 128 printable characters."""
    actor = raw.strip()
    if not actor or len(actor) > _MAX_ACTOR or not actor.isprintable():
        problem = f"must be 1 to {_MAX_ACTOR} printable characters"
        raise BadRequest("invalid actor", {field: problem})
    return actor


def api_error(exc: Exception, ctx: AdminContext) -> ApiError | None:
    """The API's answer to an exception of a route (None: not an expected one)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, PolicyError):
        return from_policy(exc)
    if isinstance(exc, StoreUnavailable):
        return _unavailable(ctx, exc)
    return None


def _unavailable(ctx: AdminContext, exc: StoreUnavailable) -> Unavailable:
    status = ctx.store.status
    advice = f" {status.advice}" if status.advice else ""
    return Unavailable(
        f"the state store cannot keep changes ({exc.problem}): nothing was changed; "
        f"devices already known keep their access and new ones follow "
        f"new_device_access_when_registry_unreachable.{advice}",
        retry_after=math.ceil(ctx.store.interval),
    )


def _answer(exc: ApiError) -> web.Response:
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Unavailable) else None
    return web.json_response(exc.body(), status=exc.status, headers=headers)


@web.middleware
async def _errors(request: web.Request, handler: AiohttpHandler) -> web.StreamResponse:
    if not is_api_path(request.path):
        return await handler(request)
    try:
        return await handler(request)
    except (ApiError, PolicyError, StoreUnavailable) as exc:
        answer = api_error(exc, request.app[ADMIN_CONTEXT])
        assert answer is not None
        return _answer(answer)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return web.json_response({"error": exc.reason}, status=exc.status, headers=headers)
    except Exception:
        log.exception("admin_api_failed", method=request.method, path=request.path)
        return web.json_response({"error": "internal error (see the gateway log)"}, status=500)
