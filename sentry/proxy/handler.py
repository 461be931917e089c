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

Long polls (Ping, Sync with Wait/HeartbeatInterval or an empty Sync body) are
registered in the long-poll registry while they wait upstream, so an admin
action can end them at once (see ``longpolls.py``).

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
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from sentry.access import AccessState
from sentry.eas import responses
from sentry.eas.commands import policy_fingerprint
from sentry.eas.errors import EasError
from sentry.eas.request import Command, EasRequest, parse_request
from sentry.eas.wbxml import Limits, decode
from sentry.model import AssociationKey, principal_domain
from sentry.observability import Metrics
from sentry.observability.metrics import command_label, status_class
from sentry.policy import (
    Changes,
    Decision,
    Forward,
    Snapshot,
    answer,
    record_policy_fingerprint,
)
from sentry.settings import GatewaySettings

from .authn import Authenticator
from .errors import FramingError, RequestTooLarge, UpstreamError
from .forward import BodyStream, relay_response
from .framing import check_request, frame_upstream
from .headers import ClientAddress, upstream_headers
from .inspect import INSPECT_LIMIT, PREFIX, Inspected, inspect
from .redirects import Mailbox, RedirectNotReplayable, Redirector, RedirectRefused
from .upstream import Upstreams

__all__ = ["PROXY", "ProxyContext", "eas_handler"]

access_log = structlog.get_logger("sentry.access_log")
_POLICY_LIMITS = Limits(max_size=INSPECT_LIMIT)
# Request ids: a random per-process prefix and a counter (no syscall per request).
_ID_PREFIX = secrets.token_hex(3) + "-"
_ids = itertools.count(1)
# Answers depend only on (decision, command, version, MIME, style): build each once.
_answer_for = functools.lru_cache(maxsize=2048)(answer)


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


PROXY: web.AppKey[ProxyContext] = web.AppKey("sentry.proxy", ProxyContext)


async def eas_handler(request: web.Request) -> web.StreamResponse:
    """aiohttp handler for ``/Microsoft-Server-ActiveSync``."""
    ctx = request.app[PROXY]
    started = time.perf_counter()
    record: dict[str, Any] = {"request_id": f"{_ID_PREFIX}{next(_ids):x}"}
    ctx.metrics.in_flight.inc()
    response: web.StreamResponse | None = None
    try:
        response = await _serve(ctx, request, record)
        return response
    except asyncio.CancelledError:
        _note_cancelled(ctx, request, record)
        raise
    finally:
        ctx.metrics.in_flight.dec()
        _finish(ctx, request, record, response, time.perf_counter() - started)


def _finish(
    ctx: ProxyContext,
    request: web.Request,
    record: dict[str, Any],
    response: web.StreamResponse | None,
    elapsed: float,
) -> None:
    status = response.status if response is not None else 499
    command = command_label(record.get("command"))
    ctx.metrics.requests.labels(command, record.get("decision", "none"), status_class(status)).inc()
    ctx.metrics.latency.labels(command).observe(elapsed)
    if ctx.access_log:
        peer = request.remote
        client = ctx.addresses.client(peer, request.headers.get("X-Forwarded-For"))
        access_log.info(
            "request", status=status, duration_ms=round(elapsed * 1000, 3), client=client, **record
        )


def _client_gone(request: web.Request) -> bool:
    """The device's connection is closed or closing."""
    transport = request.transport
    return transport is None or transport.is_closing()


def _note_cancelled(ctx: ProxyContext, request: web.Request, record: dict[str, Any]) -> None:
    """Classify a request that ended without an answer: the device hung up
    (``client_gone``), or the gateway itself cancelled it (``cancelled``)."""
    if _client_gone(request):
        record["error_kind"] = "client_gone"
        record["error"] = "the device closed the connection before the answer was complete"
        ctx.metrics.client_disconnects.labels(command_label(record.get("command"))).inc()
    else:
        record["error_kind"] = "cancelled"
        record["error"] = "the request was cancelled by the gateway"


async def _serve(
    ctx: ProxyContext, request: web.Request, record: dict[str, Any]
) -> web.StreamResponse:
    try:
        realms = ctx.state.snapshot.realms
        eas = parse_request(request.method, request.query_string, request.headers, realms)
    except EasError as exc:
        return _bad_request(ctx, record, exc, "query")
    _describe(record, eas)
    try:
        framing = check_request(request, ctx.settings.header_limits)
    except FramingError as exc:
        return _bad_framing(ctx, record, exc)
    checked = await ctx.authn.check(request, eas, record, ctx.state.snapshot)  # one identity
    if isinstance(checked, web.StreamResponse):
        return checked
    eas = checked
    _describe(record, eas)
    if eas.command is None:
        return await _options(ctx, request, eas, record)
    declared = request.content_length
    if declared is not None and declared > ctx.settings.max_request_bytes:
        return _too_large(ctx, record, ctx.settings.max_request_bytes)
    try:
        inspected = await inspect(request, eas, framing.content_encoding)
    except RequestTooLarge as exc:
        return _too_large(ctx, record, exc.limit)
    except FramingError as exc:
        return _bad_framing(ctx, record, exc)
    except EasError as exc:
        return _bad_request(ctx, record, exc, "body")
    outcome = await ctx.state.decide(eas, inspected.facts)
    _describe_outcome(record, outcome.decision)
    if not isinstance(outcome.decision, Forward):
        _count_refusal(ctx, outcome.decision)
        return _answer(ctx, eas, outcome.decision)
    key = outcome.association.key
    return await _forward(ctx, request, eas, inspected, outcome.decision, key, record)


def _count_refusal(ctx: ProxyContext, decision: Decision) -> None:
    for reason in decision.reasons:
        ctx.metrics.refusals.labels(reason.value).inc()


def _describe(record: dict[str, Any], eas: EasRequest) -> None:
    record["command"] = eas.command.value if eas.command else "OPTIONS"
    record["device_id"] = eas.device_id
    record["device_type"] = eas.device_type
    record["user"] = eas.user.key if eas.user else None
    record["user_raw"] = eas.user.raw if eas.user else None
    record["version"] = eas.protocol_version


def _describe_outcome(record: dict[str, Any], decision: Decision) -> None:
    record["decision"] = type(decision).__name__.lower()
    record["reasons"] = sorted(r.value for r in decision.reasons)
    if decision.violations:
        record["violations"] = sorted(decision.violations)
    if isinstance(decision, Forward):
        record["pool"] = decision.pool


def _bad_request(
    ctx: ProxyContext, record: dict[str, Any], exc: EasError, where: str
) -> web.Response:
    ctx.metrics.bad_requests.labels(f"{where}:{type(exc).__name__}").inc()
    record["decision"] = "bad_request"
    record["error"] = exc.message
    return _to_web(responses.bad_request(exc))


def _bad_framing(ctx: ProxyContext, record: dict[str, Any], exc: FramingError) -> web.Response:
    """A head or body that cannot be forwarded exactly: refused, and the
    connection closed (what follows on it cannot be trusted to be framed)."""
    ctx.metrics.bad_requests.labels(f"framing:{exc.kind}").inc()
    record["decision"] = "bad_request"
    record["error"] = exc.message
    response = _to_web(responses.error(exc.http_status, exc.public_text))
    response.force_close()
    return response


def _too_large(ctx: ProxyContext, record: dict[str, Any], limit: int) -> web.Response:
    ctx.metrics.bad_requests.labels("body:RequestTooLarge").inc()
    record["decision"] = "bad_request"
    record["error"] = f"request body exceeds {limit} bytes"
    return _to_web(responses.error(413, record["error"]))


def _to_web(resp: responses.Response) -> web.Response:
    return web.Response(
        status=resp.status, reason=resp.reason, headers=resp.headers, body=resp.body
    )


# -- step 5: answers ---------------------------------------------------------------


def _answer(ctx: ProxyContext, eas: EasRequest, decision: Decision) -> web.Response:
    """The refusal or wipe for ``decision`` (not a Forward): ``policy.answer``."""
    assert eas.command is not None and not isinstance(decision, Forward)
    style = ctx.state.snapshot.prefs.refusal_style
    resp = _answer_for(
        decision, eas.command, eas.protocol_version, mime_body=_is_mime(eas), style=style
    )
    return _to_web(resp)


def _is_mime(eas: EasRequest) -> bool:
    return bool(eas.content_type) and "rfc822" in (eas.content_type or "").lower()


async def _options(
    ctx: ProxyContext, request: web.Request, eas: EasRequest, record: dict[str, Any]
) -> web.StreamResponse:
    """OPTIONS: ask the user's pool (or the default pool), else answer ourselves."""
    record["decision"] = "options"
    snapshot = ctx.state.snapshot
    route = snapshot.pool_for(snapshot.principal_of(eas.user.key)) if eas.user else None
    name = route.name if route is not None else snapshot.routing.default
    pool = ctx.upstreams.pools.get(name) if name else None
    if pool is None:
        return _to_web(responses.options_response())
    record["pool"] = pool.name
    return await _send(ctx, request, pool.name, None, b"", None, record)


# -- step 5: forwarding ---------------------------------------------------------------


async def _forward(
    ctx: ProxyContext,
    request: web.Request,
    eas: EasRequest,
    inspected: Inspected,
    decision: Forward,
    key: AssociationKey,
    record: dict[str, Any],
) -> web.StreamResponse:
    body: bytes | BodyStream
    if inspected.body is not None:
        body = inspected.body
    else:
        prefix = request.get(PREFIX, b"")
        limit = ctx.settings.max_request_bytes
        body = BodyStream(prefix, request.content, limit, expected=request.content_length)
    mailbox = Mailbox(key.user, principal_domain(key.user))
    if eas.command is Command.Provision:
        return await _send(
            ctx, request, decision.pool, None, body, None, record,
            policy_of=key, mailbox=mailbox, verify=key,
        )  # fmt: skip
    if not inspected.long_poll:
        return await _send(
            ctx, request, decision.pool, None, body, None, record, mailbox=mailbox, verify=key
        )
    hold = min(
        inspected.hold_seconds or ctx.settings.max_heartbeat_seconds,
        ctx.settings.max_heartbeat_seconds,
    )
    read_timeout = hold + ctx.settings.long_poll_margin_seconds
    return await _send(
        ctx, request, decision.pool, key, body, read_timeout, record,
        eas=eas, mailbox=mailbox, verify=key,
    )  # fmt: skip


async def _send(
    ctx: ProxyContext,
    request: web.Request,
    pool_name: str,
    key: AssociationKey | None,
    body: bytes | BodyStream,
    read_timeout: float | None,
    record: dict[str, Any],
    *,
    eas: EasRequest | None = None,
    policy_of: AssociationKey | None = None,
    mailbox: Mailbox | None = None,
    verify: AssociationKey | None = None,
) -> web.StreamResponse:
    pool = ctx.upstreams.pools[pool_name]
    timeout = aiohttp.ClientTimeout(
        total=None,
        sock_connect=pool.settings.connect_timeout_seconds,
        sock_read=read_timeout or ctx.settings.request_timeout_seconds,
    )
    chain = ctx.addresses.chain(request.remote, request.headers.get("X-Forwarded-For"))
    headers = upstream_headers(request.headers, chain, ctx.proto)
    data = frame_upstream(headers, body)
    poll = ctx.state.longpolls.hold(key, record["command"]) if key is not None else None
    held = ctx.metrics.held_long_polls.labels(record["command"]) if poll else None
    if held is not None:
        held.inc()
    try:
        try:
            server, upstream = await ctx.redirects.send(
                pool, mailbox, request.method, request.path_qs, headers, data, timeout
            )
        except asyncio.CancelledError:
            record["upstream_cancelled"] = True  # the backend request is abandoned
            if poll is None or eas is None or eas.command is None:
                raise
            if poll.shutdown:
                _uncancel()
                record["decision"] = "shutdown"
                return _to_web(responses.poll_ended(eas.command))
            if poll.revoked_by is None:
                raise
            _uncancel()
            return _revoked(ctx, eas, poll.revoked_by, poll.revoked_at, record)
        if poll is not None:
            poll.responding = True
    except RequestTooLarge as exc:
        return _too_large(ctx, record, exc.limit)
    except UpstreamError as exc:
        if _client_gone(request):  # e.g. the device's body stopped mid-stream
            raise asyncio.CancelledError from exc
        if verify is not None and isinstance(exc, RedirectRefused | RedirectNotReplayable):
            await ctx.state.backend_answered(verify, 451)  # a 451 authenticated the user
        return _upstream_failed(ctx, pool_name, exc, record)
    finally:
        if poll is not None:
            ctx.state.longpolls.release(poll)
        if held is not None:
            held.dec()
    record["server"] = server.label
    record["upstream_status"] = upstream.status
    try:
        if verify is not None:  # before relaying: the client never sees an answer the state lacks
            await ctx.state.backend_answered(verify, upstream.status)
        keep = INSPECT_LIMIT if policy_of is not None and upstream.status == 200 else 0
        response, size, kept = await relay_response(request, upstream, keep=keep)
    except (TimeoutError, aiohttp.ClientError) as exc:
        if _client_gone(request):  # the write to the device failed, not the backend
            raise asyncio.CancelledError from exc
        ctx.metrics.upstream_errors.labels(pool_name, "broken").inc()
        record["error_kind"] = "broken"
        record["error"] = f"backend broke mid-response: {exc!r}"
        if request.transport is not None:
            request.transport.close()
        raise
    finally:
        upstream.release()
    record["bytes_out"] = size
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


def _uncancel() -> None:
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


def _revoked(
    ctx: ProxyContext, eas: EasRequest, decision: Decision, at: float | None, record: dict[str, Any]
) -> web.Response:
    if at is not None:
        ctx.metrics.revocation_latency.observe(time.monotonic() - at)
    _describe_outcome(record, decision)
    _count_refusal(ctx, decision)
    record["revoked"] = True
    return _answer(ctx, eas, decision)


def _upstream_failed(
    ctx: ProxyContext, pool: str, exc: UpstreamError, record: dict[str, Any]
) -> web.Response:
    ctx.metrics.upstream_errors.labels(pool, exc.kind).inc()
    record["error_kind"] = exc.kind
    record["error"] = exc.message
    if exc.server:
        record["server"] = exc.server
    extra: tuple[tuple[str, str], ...] = ()
    if exc.retry_after is not None:
        extra = (("Retry-After", str(exc.retry_after)),)
    # The device gets a fixed text; what went wrong (server, cause) is in the log.
    return _to_web(responses.error(exc.http_status, exc.public_text, extra))
