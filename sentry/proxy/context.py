"""What every part of the EAS endpoint shares: the context built once by the
app factory, the request's log context (``note``), and the small answers
both the handler (``handler.py``) and the forwarding (``forwarding.py``)
give: the 413, and the bytes of ``sentry.eas.responses`` as an aiohttp
response."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDict

from sentry.access import AccessState
from sentry.eas import responses
from sentry.eas.request import EasRequest
from sentry.observability import Metrics
from sentry.observability import context as logcontext
from sentry.observability.context import NO_STRS, Strs
from sentry.policy import Decision, Forward, answer
from sentry.settings import GatewaySettings

from .authn import Authenticator
from .errors import FramingError
from .h1message import DeviceRequest
from .headers import ClientAddress
from .redirects import Redirector
from .upstream import Upstreams

__all__ = [
    "Again",
    "ProxyContext",
    "Rewrite",
    "answer_for",
    "bad_framing",
    "client_gone",
    "count_refusal",
    "describe_outcome",
    "is_mime",
    "note",
    "refusal",
    "to_web",
    "too_large",
]

# Answers depend only on (decision, command, version, MIME): build each once.
answer_for = functools.lru_cache(maxsize=2048)(answer)
note = logcontext.note
"""Add fields to the request's context: every log line of the request, and its
access-log line, carry them (begun by ``handler.serve_device``)."""


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


def client_gone(request: DeviceRequest) -> bool:
    """The device's connection is closed or closing."""
    transport = request.transport
    return transport is None or transport.is_closing()


def too_large(ctx: ProxyContext, limit: int) -> web.Response:
    """413: the device's body is over ``limit`` (counted and noted)."""
    ctx.metrics.bad_requests.labels("body:RequestTooLarge").inc()
    error = f"request body exceeds {limit} bytes"
    note(decision="bad_request", error=error)
    return to_web(responses.error(413, error))


def to_web(resp: responses.Response) -> web.Response:
    """An answer of ``sentry.eas.responses`` as an aiohttp response."""
    return web.Response(
        status=resp.status, reason=resp.reason, headers=resp.headers, body=resp.body
    )


def count_refusal(ctx: ProxyContext, decision: Decision) -> None:
    """Count a refusal under each of its reasons."""
    for reason in decision.reasons:
        ctx.metrics.refusals.labels(reason.value).inc()


def describe_outcome(decision: Decision) -> None:
    """Note the decision (kind, reasons, violations, rule, pool) for the log."""
    reasons = decision.reasons
    note(
        decision=type(decision).__name__.lower(),
        # Strs: fields that cannot change, so the access line may wait (accesslog._settled)
        reasons=Strs(sorted(r.value for r in reasons)) if reasons else NO_STRS,
    )
    if decision.violations:
        note(violations=Strs(sorted(decision.violations)))
    if decision.rule is not None:  # the device access rule that matched
        note(rule=decision.rule)
    if isinstance(decision, Forward):
        note(pool=decision.pool)


def refusal(ctx: ProxyContext, eas: EasRequest, decision: Decision) -> web.Response:
    """The refusal or wipe for ``decision`` (not a Forward): ``policy.answer``."""
    assert eas.command is not None and not isinstance(decision, Forward)
    resp = answer_for(decision, eas.command, eas.protocol_version, mime_body=is_mime(eas))
    return to_web(resp)


def is_mime(eas: EasRequest) -> bool:
    """A SendMail/SmartReply/SmartForward body in MIME (not WBXML)."""
    return bool(eas.content_type) and "rfc822" in (eas.content_type or "").lower()


def bad_framing(ctx: ProxyContext, exc: FramingError) -> web.Response:
    """A head or body that cannot be forwarded exactly: refused, and the
    connection closed (what follows on it cannot be trusted to be framed)."""
    ctx.metrics.bad_requests.labels(f"framing:{exc.kind}").inc()
    note(decision="bad_request", error=exc.message)
    response = to_web(responses.error(exc.http_status, exc.public_text))
    response.force_close()
    return response
