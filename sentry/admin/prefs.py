"""Routes of the gateway-wide settings: preferences, and the read-only pools view.

Approach. ``PUT /api/preferences`` takes any subset of the preferences; the
fields not given keep their value. The new value is checked by the policy
(limits at least 1) and applied like every other change: at once, to held
long polls too (turning auto-block on ends the Pings of unlinked rows). The
pools view joins the configured pools with the health the upstream checks
last saw (state, the reason and since when, the last check), and shows the
routing.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sentry.model import NewDeviceAccess, RefusalStyle
from sentry.policy import registry
from sentry.proxy.upstream import Server

from .context import iso
from .schema import Call, Field, Route
from .views import prefs_view

__all__ = ["ROUTES"]

_PREFS_BODY = {
    "auto_block_unregistered": Field("boolean", "refuse unlinked associations until allowed"),
    "max_devices_per_mailbox": Field("integer", "null: no limit", nullable=True, minimum=1),
    "max_mailboxes_per_device": Field("integer", "null: no limit", nullable=True, minimum=1),
    "refusal_style": Field("string", choices=tuple(s.value for s in RefusalStyle)),
    "new_device_access_when_registry_unreachable": Field(
        "string", choices=tuple(a.value for a in NewDeviceAccess)
    ),
    "note": Field("string", "why (kept in the audit log)"),
}


async def _get_preferences(call: Call) -> dict[str, Any]:
    return prefs_view(call.ctx.snapshot.prefs)


async def _put_preferences(call: Call) -> dict[str, Any]:
    given = {k: v for k, v in call.body.items() if k != "note"}
    await call.ctx.commit(
        lambda snap, now: registry.set_preferences(
            snap, replace(snap.prefs, **given), actor=call.actor, now=now, note=call.note
        )
    )
    return prefs_view(call.ctx.snapshot.prefs)


def _server_view(server: Server) -> dict[str, Any]:
    health = server.health
    failure = health.failure
    return {
        "url": server.label,
        "state": health.state.value,
        "healthy": server.healthy,
        "failures": health.failures,
        "reason": failure.kind if failure else None,
        "detail": failure.detail if failure else None,
        "since": iso(health.since),
        "last_check": iso(health.last_check),
    }


async def _get_pools(call: Call) -> dict[str, Any]:
    items = []
    for pool in call.ctx.upstreams.pools.values():
        items.append(
            {
                "name": pool.name,
                "type": pool.type,
                "healthy": sum(s.healthy for s in pool.servers),
                "ready": not pool.not_ready(),
                "servers": [_server_view(s) for s in pool.servers],
            }
        )
    routing = call.ctx.snapshot.routing
    return {
        "items": items,
        "routing": {
            "default": routing.default,
            "domains": dict(routing.domains),
            "users": dict(routing.users),
        },
    }


ROUTES = (
    Route(
        "GET",
        "/api/preferences",
        _get_preferences,
        "The preferences",
        "preferences",
        response="Preferences",
    ),
    Route(
        "PUT",
        "/api/preferences",
        _put_preferences,
        "Change preferences (fields not given keep their value)",
        "preferences",
        body=_PREFS_BODY,
        response="Preferences",
        changes=True,
    ),
    Route(
        "GET",
        "/api/pools",
        _get_pools,
        "Backend pools, server health and routing",
        "preferences",
        response="Pools",
    ),
)
