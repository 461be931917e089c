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

Forwarding is ``_send`` (a plain forward: ask the pool, ``_relay`` the
answer) or ``_hold`` (a long poll: Ping, Sync with Wait/HeartbeatInterval or
an empty Sync body), which registers in the long-poll registry while it waits
upstream, so a change that refuses it ends it at once (see ``sentry/longpolls.py``).
Backend errors reach the handler only as ``UpstreamError`` values
(``errors.map_client_errors``, the one boundary for aiohttp's exceptions).

What the log says about a request is noted in its log context as it becomes
known (``note``, ``sentry.observability.context``); the ``request_context``
middleware begins the context with the request id and ends it after the
request, so every line
logged while the request is served (an authentication refusal, a store
failure in the commit it caused) carries it, and the access-log line at the
end has them all.

A device that hangs up ends its request at once: the listener runs with
aiohttp's ``handler_cancellation``, so losing the connection cancels the
handler wherever it waits, and a cancelled wait on the backend closes the
upstream connection too (a held Ping no longer sits on the backend until its
heartbeat). Such a request is logged with status 499 and
``error_kind="client_gone"`` and counted in ``sentry_client_disconnects_total``,
never as a backend error; a write to a device that has just gone away is
classified the same way.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import structlog
from aiohttp import web
from multidict import CIMultiDict

from sentry.access import AccessState
from sentry.eas import responses
from sentry.eas.commands import policy_fingerprint
from sentry.eas.errors import EasError
from sentry.eas.request import Command, EasRequest, parse_request
from sentry.eas.wbxml import Limits, decode
from sentry.model import AssociationKey, principal_domain
from sentry.observability import Metrics
from sentry.observability import context as logcontext
from sentry.observability.metrics import command_label, status_class
from sentry.policy import (
    Changes,
    Decision,
    Forward,
    Snapshot,
    answer,
    options_pool,
    record_policy_fingerprint,
)
from sentry.settings import GatewaySettings

from .authn import Authenticator
from .errors import FramingError, RequestTooLarge, UpstreamError, map_client_errors
from .forward import CHUNK, BodyStream, relay_response
from .framing import check_request, frame_upstream
from .guard import Handler
from .headers import ClientAddress, upstream_headers
from .inspect import INSPECT_LIMIT, PREFIX, Inspected, inspect
from .provisioning import before_forward, reprovision, translate
from .redirects import Mailbox, RedirectNotReplayable, Redirector, RedirectRefused
from .upstream import Server, Upstreams

__all__ = ["PROXY", "ProxyContext", "eas_handler", "request_context"]

access_log = structlog.get_logger("sentry.access_log")
_POLICY_LIMITS = Limits(max_size=INSPECT_LIMIT)
# Request ids: a random per-process prefix and a counter (no syscall per request).
_ID_PREFIX = secrets.token_hex(3) + "-"
_ids = itertools.count(1)
# Answers depend only on (decision, command, version, MIME): build each once.
_answer_for = functools.lru_cache(maxsize=2048)(answer)
note = logcontext.note
"""Add fields to the request's context: every log line of the request, and its
access-log line, carry them (begun by ``request_context``)."""


@dataclass
class ProxyContext:
    """Everything the handler needs, built once by the app factory."""

    settings: GatewaySettings
    state: AccessState
    upstreams: Upstreams
    metrics: Metrics
    addresses: ClientAddress
    proto: str
    authn: Authenticator
    redirects: Redirector
    access_log: bool = True


Rewrite = Callable[[CIMultiDict[str]], str]
"""Policy-key translation: fills the upstream headers, returns the path and query."""
Again = Callable[[], Awaitable[Rewrite | None]]
"""After a backend 449: provision upstream again; the new translation, or None."""

PROXY: web.AppKey[ProxyContext] = web.AppKey("sentry.proxy", ProxyContext)


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Begin the request's log context (``request_id`` first) for exactly
    the span of one request (``sentry.observability.context``): every line logged while
    it is served, a store failure in the commit it caused included, carries
    it. A kept-alive connection serves its requests in one task: each
    request gets a fresh context, and the one before is put back after."""
    token = logcontext.begin(request_id=f"{_ID_PREFIX}{next(_ids):x}")
    try:
        return await handler(request)
    finally:
        logcontext.end(token)


async def eas_handler(request: web.Request) -> web.StreamResponse:
    """aiohttp handler for ``/Microsoft-Server-ActiveSync``."""
    ctx = request.app[PROXY]
    started = time.perf_counter()
    ctx.metrics.in_flight.inc()
    response: web.StreamResponse | None = None
    try:
        response = await _serve(ctx, request)
        return response
    except asyncio.CancelledError:
        _note_cancelled(ctx, request)
        raise
    finally:
        ctx.metrics.in_flight.dec()
        _finish(ctx, request, response, time.perf_counter() - started)


def _finish(
    ctx: ProxyContext,
    request: web.Request,
    response: web.StreamResponse | None,
    elapsed: float,
) -> None:
    status = response.status if response is not None else 499
    fields = logcontext.fields()
    command = command_label(fields.get("command"))
    ctx.metrics.requests.labels(command, fields.get("decision", "none"), status_class(status)).inc()
    ctx.metrics.latency.labels(command).observe(elapsed)
    if ctx.access_log:
        peer = request.remote
        client = ctx.addresses.client(peer, request.headers.get("X-Forwarded-For"))
        # The context's fields explicitly too: the line is whole even where
        # the processors do not merge the context (structlog's capture_logs).
        duration_ms = round(elapsed * 1000, 3)
        access_log.info("request", **fields, status=status, duration_ms=duration_ms, client=client)


def _client_gone(request: web.Request) -> bool:
    """The device's connection is closed or closing."""
    transport = request.transport
    return transport is None or transport.is_closing()


def _note_cancelled(ctx: ProxyContext, request: web.Request) -> None:
    """Classify a request that ended without an answer: the device hung up
    (``client_gone``), or the gateway itself cancelled it (``cancelled``)."""
    if _client_gone(request):
        note(
            error_kind="client_gone",
            error="the device closed the connection before the answer was complete",
        )
        command = logcontext.fields().get("command")
        ctx.metrics.client_disconnects.labels(command_label(command)).inc()
    else:
        note(error_kind="cancelled", error="the request was cancelled by the gateway")


async def _serve(ctx: ProxyContext, request: web.Request) -> web.StreamResponse:
    try:
        realms = ctx.state.snapshot.realms
        eas = parse_request(request.method, request.query_string, request.headers, realms)
    except EasError as exc:
        return _bad_request(ctx, exc, "query")
    _describe(eas)
    try:
        framing = check_request(request, ctx.settings.header_limits)
    except FramingError as exc:
        return _bad_framing(ctx, exc)
    checked = await ctx.authn.check(request, eas, ctx.state.snapshot)  # one identity
    if isinstance(checked, web.StreamResponse):
        return checked
    eas = checked
    _describe(eas)
    if eas.command is None:
        return await _options(ctx, request, eas)
    declared = request.content_length
    if declared is not None and declared > ctx.settings.max_request_bytes:
        return _too_large(ctx, ctx.settings.max_request_bytes)
    try:
        inspected = await inspect(request, eas, framing.content_encoding)
    except RequestTooLarge as exc:
        return _too_large(ctx, exc.limit)
    except FramingError as exc:
        return _bad_framing(ctx, exc)
    except EasError as exc:
        return _bad_request(ctx, exc, "body")
    outcome = await ctx.state.decide(eas, inspected.facts)
    _describe_outcome(outcome.decision)
    if not isinstance(outcome.decision, Forward):
        _count_refusal(ctx, outcome.decision)
        return _answer(ctx, eas, outcome.decision)
    return await _forward(ctx, request, eas, inspected, outcome.decision, outcome.association.key)


def _count_refusal(ctx: ProxyContext, decision: Decision) -> None:
    for reason in decision.reasons:
        ctx.metrics.refusals.labels(reason.value).inc()


def _describe(eas: EasRequest) -> None:
    note(
        command=eas.command.value if eas.command else "OPTIONS",
        device_id=eas.device_id,
        device_type=eas.device_type,
        user=eas.user.key if eas.user else None,
        user_raw=eas.user.raw if eas.user else None,
        version=eas.protocol_version,
    )


def _describe_outcome(decision: Decision) -> None:
    note(
        decision=type(decision).__name__.lower(),
        reasons=sorted(r.value for r in decision.reasons),
    )
    if decision.violations:
        note(violations=sorted(decision.violations))
    if decision.rule is not None:  # the device access rule that matched
        note(rule=decision.rule)
    if isinstance(decision, Forward):
        note(pool=decision.pool)


def _bad_request(ctx: ProxyContext, exc: EasError, where: str) -> web.Response:
    ctx.metrics.bad_requests.labels(f"{where}:{type(exc).__name__}").inc()
    note(decision="bad_request", error=exc.message)
    return _to_web(responses.bad_request(exc))


def _bad_framing(ctx: ProxyContext, exc: FramingError) -> web.Response:
    """A head or body that cannot be forwarded exactly: refused, and the
    connection closed (what follows on it cannot be trusted to be framed)."""
    ctx.metrics.bad_requests.labels(f"framing:{exc.kind}").inc()
    note(decision="bad_request", error=exc.message)
    response = _to_web(responses.error(exc.http_status, exc.public_text))
    response.force_close()
    return response


def _too_large(ctx: ProxyContext, limit: int) -> web.Response:
    ctx.metrics.bad_requests.labels("body:RequestTooLarge").inc()
    error = f"request body exceeds {limit} bytes"
    note(decision="bad_request", error=error)
    return _to_web(responses.error(413, error))


def _to_web(resp: responses.Response) -> web.Response:
    return web.Response(
        status=resp.status, reason=resp.reason, headers=resp.headers, body=resp.body
    )


# -- step 5: answers ---------------------------------------------------------------


def _answer(ctx: ProxyContext, eas: EasRequest, decision: Decision) -> web.Response:
    """The refusal or wipe for ``decision`` (not a Forward): ``policy.answer``."""
    assert eas.command is not None and not isinstance(decision, Forward)
    resp = _answer_for(decision, eas.command, eas.protocol_version, mime_body=_is_mime(eas))
    return _to_web(resp)


def _is_mime(eas: EasRequest) -> bool:
    return bool(eas.content_type) and "rfc822" in (eas.content_type or "").lower()


async def _options(ctx: ProxyContext, request: web.Request, eas: EasRequest) -> web.StreamResponse:
    """OPTIONS: ask the user's pool (or the default pool), else answer ourselves."""
    note(decision="options")
    name = options_pool(ctx.state.snapshot, eas.user.key if eas.user else None)
    pool = ctx.upstreams.pools.get(name) if name else None
    if pool is None:
        return _to_web(responses.options_response())
    note(pool=pool.name)
    return await _send(ctx, request, pool.name, b"", None)


# -- step 5: forwarding ---------------------------------------------------------------


async def _forward(
    ctx: ProxyContext,
    request: web.Request,
    eas: EasRequest,
    inspected: Inspected,
    decision: Forward,
    key: AssociationKey,
) -> web.StreamResponse:
    """Send a forwarded request: a long poll is held (revocable while it
    waits upstream), anything else is a plain forward; a Provision answer's
    ActiveSync policy is recorded for the association."""
    body: bytes | BodyStream
    if inspected.body is not None:
        body = inspected.body
    else:
        prefix = request.get(PREFIX, b"")
        limit = ctx.settings.max_request_bytes
        if _bufferable(request, min(limit, CHUNK)):  # small: read whole, one write upstream
            body = prefix + await request.content.read()
        else:
            body = BodyStream(prefix, request.content, limit, expected=request.content_length)
    mailbox = Mailbox(key.user, principal_domain(key.user))
    try:  # the gateway's own ActiveSync policy (provisioning.py)
        own = await before_forward(ctx, request, eas, inspected.body, decision.pool, key, mailbox)
    except UpstreamError as exc:
        return _upstream_failed(ctx, decision.pool, exc)
    if isinstance(own, web.Response):
        note(eas_policy="answered")
        return own
    rewrite: Rewrite | None = None
    again: Again | None = None
    if own is not None:
        note(eas_policy="translated")
        rewrite = functools.partial(translate, own, eas, request.path, request.query_string)
        again = functools.partial(_reprovisioned, ctx, request, eas, decision.pool, key, mailbox)
        if isinstance(body, BodyStream) and _bufferable(request, INSPECT_LIMIT):
            body = request.get(PREFIX, b"") + await request.content.read()  # replayable
    if eas.command is Command.Provision:
        return await _send(ctx, request, decision.pool, body, mailbox, verify=key, policy_of=key)
    if not inspected.long_poll:
        return await _send(
            ctx, request, decision.pool, body, mailbox, verify=key, rewrite=rewrite, again=again
        )
    return await _hold(
        ctx, request, eas, decision.pool, key, body, mailbox, inspected.hold_seconds,
        rewrite=rewrite, again=again,
    )  # fmt: skip


async def _send(
    ctx: ProxyContext,
    request: web.Request,
    pool_name: str,
    body: bytes | BodyStream,
    mailbox: Mailbox | None,
    *,
    verify: AssociationKey | None = None,
    policy_of: AssociationKey | None = None,
    rewrite: Rewrite | None = None,
    again: Again | None = None,
) -> web.StreamResponse:
    """A plain forward: ask the pool, relay its answer."""
    try:
        server, upstream = await _ask(ctx, request, pool_name, body, mailbox, None, rewrite, again)
    except (RequestTooLarge, UpstreamError) as exc:
        await _redirect_verifies(ctx, verify, exc)
        return _not_sent(ctx, request, pool_name, exc)
    return await _relay(ctx, request, pool_name, server, upstream, verify, policy_of)


async def _hold(
    ctx: ProxyContext,
    request: web.Request,
    eas: EasRequest,
    pool_name: str,
    key: AssociationKey,
    body: bytes | BodyStream,
    mailbox: Mailbox,
    hold_seconds: float | None,
    *,
    rewrite: Rewrite | None = None,
    again: Again | None = None,
) -> web.StreamResponse:
    """A long poll (Ping, a waiting Sync): registered in the long-poll
    registry while it waits upstream, so a revocation (or the shutdown)
    cancels the wait and the gateway answers in the backend's place."""
    assert eas.command is not None
    limit = ctx.settings.max_heartbeat_seconds
    read_timeout = min(hold_seconds or limit, limit) + ctx.settings.long_poll_margin_seconds
    command = eas.command.value
    poll = ctx.state.longpolls.hold(key, command)
    held = ctx.metrics.held_long_polls.labels(command)
    held.inc()
    try:
        try:
            server, upstream = await _ask(
                ctx, request, pool_name, body, mailbox, read_timeout, rewrite, again
            )
        except asyncio.CancelledError:
            note(upstream_cancelled=True)  # the backend request is abandoned
            if poll.shutdown:
                _uncancel()
                note(decision="shutdown")
                return _to_web(responses.poll_ended(eas.command))
            if poll.revoked_by is None:
                raise
            _uncancel()
            return _revoked(ctx, eas, poll.revoked_by, poll.revoked_at)
        poll.responding = True
    except (RequestTooLarge, UpstreamError) as exc:
        await _redirect_verifies(ctx, key, exc)
        return _not_sent(ctx, request, pool_name, exc)
    finally:
        ctx.state.longpolls.release(poll)
        held.dec()
    return await _relay(ctx, request, pool_name, server, upstream, key, None)


async def _ask(
    ctx: ProxyContext,
    request: web.Request,
    pool_name: str,
    body: bytes | BodyStream,
    mailbox: Mailbox | None,
    read_timeout: float | None,
    rewrite: Rewrite | None = None,
    again: Again | None = None,
) -> tuple[Server, aiohttp.ClientResponse]:
    """Send the request to a server of the pool (451 redirects followed);
    the answer's head is read, its body not yet. ``rewrite`` translates the
    policy key; after a backend 449, ``again`` provisions upstream once more
    and the request is sent again with the new key (provisioning.py)."""
    pool = ctx.upstreams.pools[pool_name]
    timeout = aiohttp.ClientTimeout(
        total=None,
        sock_connect=pool.settings.connect_timeout_seconds,
        sock_read=read_timeout or ctx.settings.request_timeout_seconds,
    )
    chain = ctx.addresses.chain(request.remote, request.headers.get("X-Forwarded-For"))
    headers = upstream_headers(request.headers, chain, ctx.proto)
    path_qs = request.path_qs if rewrite is None else rewrite(headers)  # policy-key translation
    data = frame_upstream(headers, body)
    server, upstream = await ctx.redirects.send(
        pool, mailbox, request.method, path_qs, headers, data, timeout
    )
    if upstream.status == 449 and again is not None and isinstance(body, bytes):
        retry = await again()  # the backend wants its own Provision again
        if retry is not None:
            upstream.release()
            headers = upstream_headers(request.headers, chain, ctx.proto)
            path_qs, data = retry(headers), frame_upstream(headers, body)
            note(eas_policy="reprovisioned")
            server, upstream = await ctx.redirects.send(
                pool, mailbox, request.method, path_qs, headers, data, timeout
            )
    return server, upstream


async def _redirect_verifies(
    ctx: ProxyContext, key: AssociationKey | None, exc: RequestTooLarge | UpstreamError
) -> None:
    """A 451 the gateway refused to follow, or could not replay, still means the
    backend authenticated the user: the row is verified (README)."""
    if key is not None and isinstance(exc, RedirectRefused | RedirectNotReplayable):
        await ctx.state.backend_answered(key, 451)


def _not_sent(
    ctx: ProxyContext, request: web.Request, pool_name: str, exc: RequestTooLarge | UpstreamError
) -> web.Response:
    """The answer when the request could not be sent: the device's body over
    the limit (413), or the backend failing (``_upstream_failed``)."""
    if isinstance(exc, RequestTooLarge):
        return _too_large(ctx, exc.limit)
    if _client_gone(request):  # e.g. the device's body stopped mid-stream
        raise asyncio.CancelledError from exc
    return _upstream_failed(ctx, pool_name, exc)


async def _relay(
    ctx: ProxyContext,
    request: web.Request,
    pool_name: str,
    server: Server,
    upstream: aiohttp.ClientResponse,
    verify: AssociationKey | None,
    policy_of: AssociationKey | None,
) -> web.StreamResponse:
    """Stream the backend's answer to the device. The association is told
    the upstream status first (the client never sees an answer the state
    lacks); a Provision answer's policy is kept and recorded."""
    note(server=server.label, upstream_status=upstream.status)
    try:
        if verify is not None:
            await ctx.state.backend_answered(verify, upstream.status)
        keep = INSPECT_LIMIT if policy_of is not None and upstream.status == 200 else 0
        with map_client_errors(server.label):
            response, size, kept = await relay_response(request, upstream, keep=keep)
    except UpstreamError as exc:
        if _client_gone(request):  # the write to the device failed, not the backend
            raise asyncio.CancelledError from exc
        ctx.metrics.upstream_errors.labels(pool_name, "broken").inc()
        note(error_kind="broken", error=f"backend broke mid-response: {exc.message}")
        if request.transport is not None:
            request.transport.close()
        raise
    finally:
        upstream.release()
    note(bytes_out=size)
    if policy_of is not None and kept:
        await _record_policy(ctx, policy_of, kept)
    return response


async def _record_policy(ctx: ProxyContext, key: AssociationKey, body: bytes) -> None:
    """Remember which ActiveSync policy the backend gave this association, so
    several policies on one device are flagged (design §5.10). Best effort:
    a body we cannot read changes nothing."""
    try:
        fingerprint = policy_fingerprint(decode(body, _POLICY_LIMITS))
    except EasError:
        return
    if fingerprint is None:
        return

    def build(snapshot: Snapshot, now: float) -> Changes:
        if key not in snapshot:  # removed meanwhile
            return ()
        return record_policy_fingerprint(snapshot, key, fingerprint, now)

    await ctx.state.commit(build)


def _bufferable(request: web.Request, limit: int) -> bool:
    """A body small enough to read whole before it is sent: a declared length
    up to ``limit`` (and to the inspection limit). Held whole, it can be sent
    again (a retry after a backend 449); a chunked or larger one is streamed,
    never retried."""
    length = request.content_length
    return length is not None and length <= min(limit, INSPECT_LIMIT)


async def _reprovisioned(
    ctx: ProxyContext,
    request: web.Request,
    eas: EasRequest,
    pool: str,
    key: AssociationKey,
    mailbox: Mailbox,
) -> Rewrite | None:
    """After a backend 449: provision upstream again; the new key translation."""
    own = await reprovision(ctx, request, eas, pool, key, mailbox)
    if own is None:
        return None
    return functools.partial(translate, own, eas, request.path, request.query_string)


def _uncancel() -> None:
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


def _revoked(
    ctx: ProxyContext, eas: EasRequest, decision: Decision, at: float | None
) -> web.Response:
    if at is not None:
        ctx.metrics.revocation_latency.observe(time.monotonic() - at)
    _describe_outcome(decision)
    _count_refusal(ctx, decision)
    note(revoked=True)
    return _answer(ctx, eas, decision)


def _upstream_failed(ctx: ProxyContext, pool: str, exc: UpstreamError) -> web.Response:
    ctx.metrics.upstream_errors.labels(pool, exc.kind).inc()
    note(error_kind=exc.kind, error=exc.message)
    if exc.server:
        note(server=exc.server)
    extra: tuple[tuple[str, str], ...] = ()
    if exc.retry_after is not None:
        extra = (("Retry-After", str(exc.retry_after)),)
    # The device gets a fixed text; what went wrong (server, cause) is in the log.
    return _to_web(responses.error(exc.http_status, exc.public_text, extra))
