"""Step 5 of the EAS endpoint, forwarding: send the decided request to a
server of its pool and relay the answer (see ``handler.py`` for the steps).

``forward`` is ``send`` (a plain forward: ask the pool, ``_relay`` the
answer) or ``_hold`` (a long poll: Ping, Sync with Wait/HeartbeatInterval or
an empty Sync body), which registers in the long-poll registry while it waits
upstream, so a change that refuses it ends it at once (see
``sentry/longpolls.py``). ``_ask`` sends (451 redirects followed by
``redirects.py``; the gateway's own ActiveSync policy key translated, and
after a backend 449 the device provisioned upstream again and the request
sent once more: ``provisioning.py``). Backend errors reach this module only
as ``UpstreamError`` values (``errors.map_client_errors``, or raised as
such by the lean client that carries every body held whole:
``leanclient.py``).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable

import aiohttp
from aiohttp import web

from sentry.eas import responses
from sentry.eas.commands.fingerprints import AnswerFingerprints
from sentry.eas.errors import EasError
from sentry.eas.request import Command, EasRequest
from sentry.eas.wbxml import Limits
from sentry.longpolls import HeldPoll
from sentry.model import AssociationKey, principal_domain
from sentry.policy import Changes, Decision, Forward, Snapshot, record_policy_fingerprint

from .context import (
    Again,
    ProxyContext,
    Rewrite,
    bad_framing,
    client_gone,
    count_refusal,
    describe_outcome,
    note,
    refusal,
    to_web,
    too_large,
)
from .errors import RequestTooLarge, UpstreamError, map_client_errors
from .forward import CHUNK, BodyStream, read_whole, relay_response
from .framing import frame_upstream
from .h1message import DeviceRequest
from .headers import upstream_headers
from .inspect import INSPECT_LIMIT, Inspected
from .provisioning import before_forward, reprovision, translate
from .redirects import Mailbox, RedirectNotReplayable, RedirectRefused
from .upstream import Answer, BackendPool, Server

__all__ = ["answer_revoked_now", "forward", "send"]

_POLICY_LIMITS = Limits(max_size=INSPECT_LIMIT)
_FINGERPRINTS = AnswerFingerprints(_POLICY_LIMITS)  # the same policy bytes, named once


async def forward(
    ctx: ProxyContext,
    request: DeviceRequest,
    eas: EasRequest,
    inspected: Inspected,
    decision: Forward,
    key: AssociationKey,
) -> web.StreamResponse | Awaitable[web.StreamResponse]:
    """Send a forwarded request: a long poll is held (revocable while it
    waits upstream), anything else is a plain forward; a Provision answer's
    ActiveSync policy is recorded for the association.

    Returns the answer when it is known here (the gateway's own policy
    answered, the backend could not be asked), else the awaitable that
    sends it, which the caller awaits at once: a held Ping then waits
    without this frame."""
    body: bytes | BodyStream
    if inspected.body is not None:
        body = inspected.body
    else:
        prefix = request.prefix
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
            body = request.prefix + await request.content.read()  # replayable
    if eas.command is Command.Provision:
        return send(ctx, request, decision.pool, body, mailbox, verify=key, policy_of=key)
    if not inspected.long_poll:
        return send(
            ctx, request, decision.pool, body, mailbox, verify=key, rewrite=rewrite, again=again
        )
    return _hold(
        ctx, request, eas, decision.pool, key, body, mailbox, inspected.hold_seconds,
        rewrite=rewrite, again=again,
    )  # fmt: skip


async def send(
    ctx: ProxyContext,
    request: DeviceRequest,
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
    request: DeviceRequest,
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
    poll.context = (request, eas)  # a revocation answers the device at once (answer_now)
    held = ctx.metrics.held_long_polls.labels(command)
    held.inc()
    try:
        try:
            asked = _ask(ctx, request, pool_name, body, mailbox, read_timeout, rewrite, again)
            request.forget_headers()  # not kept while it waits (rebuilt if read again)
            server, upstream = await asked
        except asyncio.CancelledError:
            note(upstream_cancelled=True)  # the backend request is abandoned
            if poll.shutdown:
                _uncancel()
                note(decision="shutdown")
                return to_web(responses.poll_ended(eas.command))
            if poll.revoked_by is None:
                raise
            _uncancel()
            if poll.answer is not None:  # written by answer_now: accounted for here
                return _revoked(ctx, eas, poll.revoked_by, None, poll.answer)
            return _revoked(ctx, eas, poll.revoked_by, poll.revoked_at)
        poll.responding = True
    except (RequestTooLarge, UpstreamError) as exc:
        await _redirect_verifies(ctx, key, exc)
        return _not_sent(ctx, request, pool_name, exc)
    finally:
        ctx.state.longpolls.release(poll)
        held.dec()
    return await _relay(ctx, request, pool_name, server, upstream, key, None)


def _ask(
    ctx: ProxyContext,
    request: DeviceRequest,
    pool_name: str,
    body: bytes | BodyStream,
    mailbox: Mailbox | None,
    read_timeout: float | None,
    rewrite: Rewrite | None = None,
    again: Again | None = None,
) -> Awaitable[tuple[Server, Answer]]:
    """Send the request to a server of the pool (451 redirects followed);
    the answer's head is read, its body not yet. ``rewrite`` translates the
    policy key; after a backend 449, ``again`` provisions upstream once more
    and the request is sent again with the new key (provisioning.py).
    Not a coroutine itself: without ``again`` the awaitable is the
    redirector's, so a held Ping waits without this frame."""
    pool = ctx.upstreams.pools[pool_name]
    timeout = _timeout(
        pool.settings.connect_timeout_seconds, read_timeout or ctx.settings.request_timeout_seconds
    )
    chain = ctx.addresses.chain(request.remote, request.headers.get("X-Forwarded-For"))
    headers = upstream_headers(request.headers, chain, ctx.proto)
    path_qs = request.path_qs if rewrite is None else rewrite(headers)  # policy-key translation
    data = frame_upstream(headers, body)
    sent = ctx.redirects.send(
        pool, mailbox, request.method, path_qs, headers, data, timeout, lean=True
    )
    if again is None or not isinstance(body, bytes):
        return sent
    return _again_after_449(ctx, request, sent, pool, mailbox, chain, body, timeout, again)


@functools.lru_cache(maxsize=256)
def _timeout(connect: float | None, read: float | None) -> aiohttp.ClientTimeout:
    """The client timeouts of a request (immutable, made once per pair of values)."""
    return aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)


async def _again_after_449(
    ctx: ProxyContext,
    request: DeviceRequest,
    sent: Awaitable[tuple[Server, Answer]],
    pool: BackendPool,
    mailbox: Mailbox | None,
    chain: list[str],
    body: bytes,
    timeout: aiohttp.ClientTimeout,
    again: Again,
) -> tuple[Server, Answer]:
    """``sent``'s answer; after a 449, the request again with the key of a new
    upstream Provision (when ``again`` gets one)."""
    server, upstream = await sent
    if upstream.status == 449:
        retry = await again()  # the backend wants its own Provision again
        if retry is not None:
            upstream.release()
            headers = upstream_headers(request.headers, chain, ctx.proto)
            path_qs, data = retry(headers), frame_upstream(headers, body)
            note(eas_policy="reprovisioned")
            server, upstream = await ctx.redirects.send(
                pool, mailbox, request.method, path_qs, headers, data, timeout, lean=True
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
    ctx: ProxyContext,
    request: DeviceRequest,
    pool_name: str,
    exc: RequestTooLarge | UpstreamError,
) -> web.Response:
    """The answer when the request could not be sent: the device's body over
    the limit (413), or the backend failing (``_upstream_failed``)."""
    if isinstance(exc, RequestTooLarge):
        return too_large(ctx, exc.limit)
    broken = request.content.broken
    if broken is not None:  # the device's own body broke while it was streamed
        return bad_framing(ctx, broken)
    if client_gone(request):  # e.g. the device's body stopped mid-stream
        raise asyncio.CancelledError from exc
    return _upstream_failed(ctx, pool_name, exc)


async def _relay(
    ctx: ProxyContext,
    request: DeviceRequest,
    pool_name: str,
    server: Server,
    upstream: Answer,
    verify: AssociationKey | None,
    policy_of: AssociationKey | None,
) -> web.StreamResponse:
    """Relay the backend's answer to the device. The association is told
    the upstream status first (the client never sees an answer the state
    lacks); a Provision answer's policy is kept and recorded. A backend that
    breaks off its answer is ``broken``: a 502 when the device has been sent
    nothing yet (an answer read whole), else its connection is cut."""
    note(server=server.label, upstream_status=upstream.status)
    try:
        if verify is not None:
            await ctx.state.backend_answered(verify, upstream.status)
        keep = INSPECT_LIMIT if policy_of is not None and upstream.status == 200 else 0
        with map_client_errors(server.label):
            response, size, kept = await relay_response(request, upstream, keep=keep)
    except UpstreamError as exc:
        if client_gone(request):  # the write to the device failed, not the backend
            raise asyncio.CancelledError from exc
        ctx.metrics.upstream_errors.labels(pool_name, "broken").inc()
        note(error_kind="broken", error=f"backend broke mid-response: {exc.message}")
        if read_whole(request, upstream):  # the device has been sent nothing yet
            return to_web(responses.error(502, exc.public_text))
        request.close()  # it has the head: only a cut connection tells it
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
        fingerprint = _FINGERPRINTS.of(body)
    except EasError:
        return
    if fingerprint is None:
        return
    row = ctx.state.snapshot.get(key)
    if row is None or row.policy_fingerprint == fingerprint:
        # The usual case: the policy it had (or the row is gone), nothing to
        # write, so no turn at the writer lock. A busy node hands that lock
        # on once per turn of its event loop: every Provision queueing there
        # for nothing waited 100-300 ms behind the others at 64 connections.
        return

    def build(snapshot: Snapshot, now: float) -> Changes:
        if key not in snapshot:  # removed meanwhile
            return ()
        return record_policy_fingerprint(snapshot, key, fingerprint, now)

    await ctx.state.commit(build)


def _bufferable(request: DeviceRequest, limit: int) -> bool:
    """A body small enough to read whole before it is sent: a declared length
    up to ``limit`` (and to the inspection limit). Held whole, it can be sent
    again (a retry after a backend 449); a chunked or larger one is streamed,
    never retried."""
    length = request.content_length
    return length is not None and length <= min(limit, INSPECT_LIMIT)


async def _reprovisioned(
    ctx: ProxyContext,
    request: DeviceRequest,
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
    ctx: ProxyContext,
    eas: EasRequest,
    decision: Decision,
    at: float | None,
    written: web.Response | None = None,
) -> web.Response:
    """The revocation's answer (``written``: already written by
    ``answer_revoked_now``), counted and noted for the access line."""
    if at is not None:
        ctx.metrics.revocation_latency.observe(time.monotonic() - at)
    describe_outcome(decision)
    count_refusal(ctx, decision)
    note(revoked=True)
    return written if written is not None else refusal(ctx, eas, decision)


def answer_revoked_now(ctx: ProxyContext, poll: HeldPoll[AssociationKey, Decision]) -> None:
    """``LongPolls.answer_now`` of the device listener: write a revoked held
    poll's refusal on its device's connection at once, before any task runs
    (``longpolls.py``); its task then accounts for it (``_revoked``)."""
    request, eas = poll.context
    decision = poll.revoked_by
    assert decision is not None
    response = refusal(ctx, eas, decision)
    if request.answer_now(response):
        poll.answer = response
        if poll.revoked_at is not None:
            ctx.metrics.revocation_latency.observe(time.monotonic() - poll.revoked_at)


def _upstream_failed(ctx: ProxyContext, pool: str, exc: UpstreamError) -> web.Response:
    ctx.metrics.upstream_errors.labels(pool, exc.kind).inc()
    note(error_kind=exc.kind, error=exc.message)
    if exc.server:
        note(server=exc.server)
    extra: tuple[tuple[str, str], ...] = ()
    if exc.retry_after is not None:
        extra = (("Retry-After", str(exc.retry_after)),)
    # The device gets a fixed text; what went wrong (server, cause) is in the log.
    return to_web(responses.error(exc.http_status, exc.public_text, extra))
