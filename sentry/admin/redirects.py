"""Routes of the redirect cache (Ivanti's redirect-URL cache): list and clear.

Approach. The cache belongs to the proxy (``sentry.proxy.redirects``): where a
backend's 451 sent each mailbox. The admin side reads and clears it. Before
listing, entries that requests would no longer use are dropped: the mailbox
now routes to another pool, or the target is no longer a server of a pool of
the same type nor in the pool's ``redirect_allow``. Clearing is an admin
action like any other: it takes a note and is written to the audit log.
Path users may be given in any form; they are canonicalised (the one rule
under the configured realms, then the user's known names).
"""

from __future__ import annotations

from typing import Any

import structlog

from sentry.model import AuditEntry
from sentry.policy import AppendAudit
from sentry.proxy.redirects import CachedRedirect, allowed_target

from .context import AdminContext, iso
from .errors import NotFound
from .schema import Call, Field, Route

__all__ = ["ROUTES", "SCHEMAS", "redirect_view"]

log = structlog.get_logger("sentry.admin")
_NOTE_BODY = {"note": Field("string", "why (kept in the audit log)")}
_FILTER = {"user": Field("string", "only this mailbox (any spelling of the principal)")}


def redirect_view(entry: CachedRedirect) -> dict[str, Any]:
    """One cached redirect."""
    return {
        "user": entry.mailbox.user,
        "domain": entry.mailbox.domain,
        "pool": entry.home_pool,
        "target": entry.target.label,
        "target_pool": entry.target.pool,
        "cached_at": iso(entry.created),
        "expires_at": iso(entry.expires),
    }


def _prune(ctx: AdminContext) -> list[CachedRedirect]:
    """The entries requests would still use; the others are dropped."""
    pools, snap, live = ctx.upstreams.pools, ctx.snapshot, []
    for entry in ctx.redirects.entries(ctx.now()):
        route = snap.pool_for(entry.mailbox.user)
        home = pools.get(entry.home_pool)
        still = (
            route is not None
            and home is not None
            and route.name == entry.home_pool
            and allowed_target(entry.target.origin, home, pools.values()) == entry.target
        )
        if still:
            live.append(entry)
        else:
            ctx.redirects.drop(entry.mailbox.user)
    return live


async def _list_redirects(call: Call) -> dict[str, Any]:
    entries = _prune(call.ctx)
    if "user" in call.query:
        user = call.ctx.snapshot.canonical(call.query["user"])
        entries = [e for e in entries if e.mailbox.user == user]
    return {"items": [redirect_view(e) for e in entries], "total": len(entries)}


async def _clear(call: Call, user: str | None) -> dict[str, Any]:
    cache = call.ctx.redirects
    if user is None:
        before = [e.mailbox.user for e in cache.entries(call.ctx.now())]
    else:
        before = [user] if cache.get(user, call.ctx.now()) is not None else []
        if not before:
            raise NotFound(f"no cached redirect for {user!r}")

    def audit(_snap: object, now: float) -> list[AppendAudit]:
        entry = AuditEntry(
            now, call.actor, "redirects.clear", user or "*", call.note,
            before={"entries": len(before)}, after={"entries": 0},
        )  # fmt: skip
        return [AppendAudit(entry)]

    await call.ctx.commit(audit)
    for name in before:
        cache.drop(name)
    log.info("redirect_cache_cleared", actor=call.actor, user=user, cleared=len(before))
    return {"cleared": len(before)}


async def _clear_redirects(call: Call) -> dict[str, Any]:
    return await _clear(call, None)


async def _clear_redirect(call: Call) -> dict[str, Any]:
    user = call.ctx.snapshot.canonical(call.path["user"])
    if user is None:
        raise NotFound(f"no redirect: {call.path['user']!r} names no account")
    return await _clear(call, user)


_REDIRECTS_DOC = (
    "Where backends' 451 redirects sent each mailbox; requests of the mailbox go there "
    "while the target is allowed and the mailbox routes to the same pool."
)
ROUTES = (
    Route(
        "GET",
        "/api/redirects",
        _list_redirects,
        "The redirect cache: one target per mailbox",
        "redirects",
        query=_FILTER,
        response="RedirectList",
        description=_REDIRECTS_DOC,
    ),
    Route(
        "DELETE",
        "/api/redirects",
        _clear_redirects,
        "Clear the whole redirect cache (the next 451 fills it again)",
        "redirects",
        body=_NOTE_BODY,
        response="RedirectsCleared",
        changes=True,
    ),
    Route(
        "DELETE",
        "/api/redirects/{user}",
        _clear_redirect,
        "Clear one mailbox's cached redirect",
        "redirects",
        body=_NOTE_BODY,
        response="RedirectsCleared",
        changes=True,
    ),
)

_S: dict[str, Any] = {"type": "string"}
_NS: dict[str, Any] = {"type": "string", "nullable": True}
_REDIRECT_FIELDS = ("user", "domain", "pool", "target", "target_pool", "cached_at", "expires_at")
SCHEMAS: dict[str, Any] = {
    "Redirect": {
        "type": "object",
        "required": list(_REDIRECT_FIELDS),
        "properties": {name: _NS if name == "domain" else _S for name in _REDIRECT_FIELDS},
    },
    "RedirectList": {
        "type": "object",
        "required": ["items", "total"],
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/Redirect"}},
            "total": {"type": "integer"},
        },
    },
    "RedirectsCleared": {
        "type": "object",
        "required": ["cleared"],
        "properties": {"cleared": {"type": "integer"}},
    },
}
"""The OpenAPI schemas of the answers above."""
