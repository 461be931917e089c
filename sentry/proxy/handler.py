"""The EAS endpoint: parse -> inspect -> decide -> refuse, or forward.

One explicit processing order for every request (the order grommunio-sync's
index.php follows, without its statics):

1. parse the method, query and headers into an ``EasRequest`` (400/405 on bad
   input, with a log event), then key it on the one authenticated identity
   of its one Authorization header (``authn.py``: 400/401/403/503 otherwise);
2. check the head's framing and sizes (``framing.py``: 400/414/415/431/501,
   never forwarded) and the declared size (413 above ``max_request_bytes``);
3. read and decode the body only for the commands whose body access control
   needs (Provision, Settings, Ping, Sync) and only up to ``INSPECT_LIMIT``;
   a larger Sync body is streamed uninspected, anything else that large is 413;
4. ask ``AccessState`` for the decision (it persists what changed first);
5. answer a refusal or a wipe with the bytes of ``sentry.eas.responses``, or
   forward to a server of the decided pool and stream the answer back; a
   backend's 451 redirect is followed by the gateway or refused, never
   relayed (``redirects.py``).

Step 5's forwarding is ``forwarding.py``; what both share (the context, the
refusal answers, ``note``) is ``context.py``.

What the log says about a request is noted in its log context as it becomes
known (``note``, ``sentry.observability.context``); ``serve_device``, the
listener's one handler, begins the context with the request id and ends it
after the request, so every line logged while the request is served (an
authentication refusal, a store failure in the commit it caused) carries it,
and the access-log line at the end has them all.

A device that hangs up ends its request at once: the listener runs each
request's handler in a task its connection cancels when it is lost
(``h1server.py``), so the handler ends wherever it waits, and a cancelled
wait on the backend closes the
upstream connection too (a held Ping no longer sits on the backend until its
heartbeat). Such a request is logged with status 499 and
``error_kind="client_gone"`` and counted in ``sentry_client_disconnects_total``,
never as a backend error; a write to a device that has just gone away is
classified the same way.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import Awaitable

import structlog
from aiohttp import web

from sentry.eas import responses
from sentry.eas.errors import EasError
from sentry.eas.request import EasRequest, parse_request
from sentry.observability import context as logcontext
from sentry.observability.accesslog import emit
from sentry.observability.metrics import command_label
from sentry.policy import Forward, options_pool

from .context import (
    ProxyContext,
    bad_framing,
    client_gone,
    count_refusal,
    describe_outcome,
    note,
    refusal,
    to_web,
    too_large,
)
from .errors import FramingError, RequestTooLarge
from .forwarding import forward, send
from .framing import check_request
from .h1message import DeviceRequest
from .inspect import inspect

__all__ = ["EAS_PATH", "ProxyContext", "serve_device"]

access_log = structlog.get_logger("sentry.access_log")
# Request ids: a random per-process prefix and a counter (no syscall per request).
_ID_PREFIX = secrets.token_hex(3) + "-"
_ids = itertools.count(1)

EAS_PATH = "/microsoft-server-activesync"
_METHODS = ("POST", "OPTIONS")
_ALLOW = (("Allow", responses.ALLOW),)


async def serve_device(ctx: ProxyContext, request: DeviceRequest) -> web.StreamResponse:
    """The device listener's one handler (``app.build_proxy_server``), every
    request of every connection. It tells the connection its request was
    dispatched (``guard.py``'s phases), begins the request's log context
    (``request_id`` first) for exactly the span of the request (every line
    logged while it is served, a store failure in the commit it caused
    included, carries it; a kept-alive connection serves its requests in one
    task, so each gets a fresh context and the one before is put back after),
    answers a path other than the EAS path 404 and a method other than POST
    and OPTIONS 405, answers ``Expect`` (as aiohttp's router did), and serves
    the EAS request. One coroutine for what three middlewares, a router and
    a dispatcher did: fewer frames held by every waiting Ping, less work per
    request."""
    token = logcontext.begin(request_id=f"{_ID_PREFIX}{next(_ids):x}")
    try:
        if request.path.rstrip("/").lower() != EAS_PATH:
            return to_web(responses.error(404, "not found"))
        if request.method not in _METHODS:
            return to_web(responses.error(405, "method not allowed", _ALLOW))
        started = time.perf_counter()
        ctx.metrics.in_flight_value.inc(1)
        response: web.StreamResponse | None = None
        try:
            if "Expect" in request.headers:
                response = await _expect(ctx, request)
                if response is not None:
                    return response
            served = await _serve(ctx, request)
            # the forward's own awaitable, awaited here: a held Ping waits without _serve's frame
            response = served if isinstance(served, web.StreamResponse) else await served
            return response
        except asyncio.CancelledError:
            _note_cancelled(ctx, request)
            raise
        finally:
            ctx.metrics.in_flight_value.inc(-1)
            _finish(ctx, request, response, time.perf_counter() - started)
    finally:
        logcontext.end(token)


async def _expect(ctx: ProxyContext, request: DeviceRequest) -> web.StreamResponse | None:
    """``Expect: 100-continue`` on HTTP/1.1 is answered ``100 Continue`` before
    the request is served; another expectation, or another beside it in a
    second field, is 417, counted and logged as
    a bad request (aiohttp's router answered both, and the gateway never
    forwards ``Expect``). Inside the request's span: a device gone while the
    interim answer is written is logged as one gone (499)."""
    if request.head.version != (1, 1):
        return None
    # every Expect field (a repeated one too) must be exactly 100-continue
    expected = request.headers.getall("Expect", ())
    if any(v.strip().lower() != "100-continue" for v in expected):
        ctx.metrics.bad_requests.labels("framing:expectation").inc()
        note(decision="bad_request", error="an expectation other than 100-continue")
        return to_web(responses.error(417, "expectation failed"))
    await request.send_continue()
    return None


def _finish(
    ctx: ProxyContext,
    request: DeviceRequest,
    response: web.StreamResponse | None,
    elapsed: float,
) -> None:
    status = response.status if response is not None else 499
    fields = logcontext.fields()
    command = command_label(fields.get("command"))
    ctx.metrics.answered(command, fields.get("decision", "none"), status, elapsed)
    if ctx.access_log:
        peer = request.remote
        client = ctx.addresses.client(peer, request.headers.get("X-Forwarded-For"))
        # The context's fields explicitly too: the line is whole even where
        # the processors do not merge the context (structlog's capture_logs).
        fields.update(status=status, duration_ms=round(elapsed * 1000, 3), client=client)
        emit(access_log, "info", "request", fields, context_in_fields=True)


def _note_cancelled(ctx: ProxyContext, request: DeviceRequest) -> None:
    """Classify a request that ended without an answer: the device hung up
    (``client_gone``), or the gateway itself cancelled it (``cancelled``)."""
    if client_gone(request):
        note(
            error_kind="client_gone",
            error="the device closed the connection before the answer was complete",
        )
        command = logcontext.fields().get("command")
        ctx.metrics.client_disconnects.labels(command_label(command)).inc()
    else:
        note(error_kind="cancelled", error="the request was cancelled by the gateway")


async def _serve(
    ctx: ProxyContext, request: DeviceRequest
) -> web.StreamResponse | Awaitable[web.StreamResponse]:
    """The answer, or the awaitable that forwards the request and answers
    (``forwarding.forward``; the caller awaits it at once)."""
    try:
        realms = ctx.state.snapshot.realms
        eas = parse_request(request.method, request.query_string, request.headers, realms)
    except EasError as exc:
        return _bad_request(ctx, exc, "query")
    _describe(eas)
    try:
        framing = check_request(request, ctx.settings.header_limits)
    except FramingError as exc:
        return bad_framing(ctx, exc)
    checked = await ctx.authn.check(request, eas, ctx.state.snapshot)  # one identity
    if isinstance(checked, web.StreamResponse):
        return checked
    if checked is not eas:  # another identity than the parser's: the log says which
        eas = checked
        _describe(eas)
    if eas.command is None:
        return _options(ctx, request, eas)
    declared = request.content_length
    if declared is not None and declared > ctx.settings.max_request_bytes:
        return too_large(ctx, ctx.settings.max_request_bytes)
    try:
        inspected = await inspect(request, eas, framing.content_encoding)
    except RequestTooLarge as exc:
        return too_large(ctx, exc.limit)
    except FramingError as exc:
        return bad_framing(ctx, exc)
    except EasError as exc:
        return _bad_request(ctx, exc, "body")
    outcome = await ctx.state.decide(eas, inspected.facts)
    describe_outcome(outcome.decision)
    if not isinstance(outcome.decision, Forward):
        count_refusal(ctx, outcome.decision)
        return refusal(ctx, eas, outcome.decision)
    return await forward(ctx, request, eas, inspected, outcome.decision, outcome.association.key)


def _describe(eas: EasRequest) -> None:
    note(
        command=eas.command.value if eas.command else "OPTIONS",
        device_id=eas.device_id,
        device_type=eas.device_type,
        user=eas.user.key if eas.user else None,
        user_raw=eas.user.raw if eas.user else None,
        version=eas.protocol_version,
    )


def _bad_request(ctx: ProxyContext, exc: EasError, where: str) -> web.Response:
    ctx.metrics.bad_requests.labels(f"{where}:{type(exc).__name__}").inc()
    note(decision="bad_request", error=exc.message)
    return to_web(responses.bad_request(exc))


# -- step 5: answers ---------------------------------------------------------------


async def _options(
    ctx: ProxyContext, request: DeviceRequest, eas: EasRequest
) -> web.StreamResponse:
    """OPTIONS: ask the user's pool (or the default pool), else answer ourselves."""
    note(decision="options")
    name = options_pool(ctx.state.snapshot, eas.user.key if eas.user else None)
    pool = ctx.upstreams.pools.get(name) if name else None
    if pool is None:
        return to_web(responses.options_response())
    note(pool=pool.name)
    return await send(ctx, request, pool.name, b"", None)
