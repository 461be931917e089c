"""Routes of the gateway-wide settings: preferences, and the read-only pools view.

Approach. ``PUT /api/preferences`` takes any subset of the preferences; the
fields not given keep their value. The new value is checked by the policy
(limits at least 1) and applied like every other change: at once, to held
long polls too (turning auto-block on ends the Pings of unlinked rows). Each
preference given becomes *admin-set*: it wins over the configuration file
across restarts, even when equal to the default; ``use_file`` hands named
preferences back to the file. Both answers show ``sources``: where each
value comes from (``admin``, ``file`` or ``default``). The pools view joins
the configured pools with the health the upstream checks last saw (state,
the reason and since when, the last check), and shows the routing.
"""

from __future__ import annotations

from typing import Any

from sentry.model import NewDeviceAccess, RefusalStyle
from sentry.policy.prefs import PREFERENCE_NAMES, file_preferences, sources, update_preferences
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
    "compliance_overrides_allow": Field(
        "boolean", "a non-compliant device is refused even where an admin allowed it"
    ),
    "use_file": Field(
        "strings",
        "preferences handed back to the configuration file (its value, or the default)",
        choices=PREFERENCE_NAMES,
    ),
    "note": Field("string", "why (kept in the audit log)"),
}


def _view(call: Call) -> dict[str, Any]:
    prefs = call.ctx.snapshot.prefs
    _, given = file_preferences(call.ctx.settings.preferences)
    return {**prefs_view(prefs), "sources": {k: v.value for k, v in sources(prefs, given).items()}}


async def _get_preferences(call: Call) -> dict[str, Any]:
    return _view(call)


async def _put_preferences(call: Call) -> dict[str, Any]:
    values = {k: v for k, v in call.body.items() if k not in ("note", "use_file")}
    released = [n.strip() for n in call.body.get("use_file", ())]
    file, _ = file_preferences(call.ctx.settings.preferences)
    await call.ctx.commit(
        lambda snap, now: update_preferences(
            snap, values, file=file, use_file=released, actor=call.actor, now=now, note=call.note
        )
    )
    return _view(call)


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
        description="Each preference given is admin-set: it wins over the configuration file "
        "across restarts, even when equal to the default. `use_file` hands the named ones back "
        "to the file. `sources` says where each value comes from.",
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
