"""Routes of the established backend types: list them, reset one.

Approach. A device (a managed device with all its EAS DeviceIds, or an
unregistered DeviceId alone) is established on one backend type by the first
association the backend accepted; associations of another type are refused
(MIXED_BACKEND). The type stays when that association is removed. An
administrator can reset it with a mandatory note (``policy.reset_backend_type``):
to a given configured type, or back to the type of the device's oldest
verified association. Like every change, the reset is one transaction, is
audited, and ends at once the held polls of associations it refuses.
"""

from __future__ import annotations

from typing import Any

from sentry.model import canonical_device_id
from sentry.policy import Changes, Snapshot, reset_backend_type
from sentry.policy.indexes import DEVICE_SCOPE, EAS_SCOPE

from .schema import Call, Field, Route
from .views import established_view

__all__ = ["ROUTES"]

_RESET_BODY = {
    "note": Field("string", "why (kept in the audit log)", required=True, blank=False),
    "backend_type": Field(
        "string",
        "set this configured backend type; without it: the type of the device's "
        "oldest verified association (or none until the next one is accepted)",
        blank=False,
    ),
}


async def _list(call: Call) -> dict[str, Any]:
    items = [established_view(e) for e in call.ctx.snapshot.established_types()]
    return {"items": items}


async def _reset(call: Call, scope: str) -> dict[str, Any]:
    body = call.body
    backend_type = body.get("backend_type")

    def build(snap: Snapshot, now: float) -> Changes:
        return reset_backend_type(
            snap, scope, note=call.note, actor=call.actor, now=now, backend_type=backend_type
        )

    ended = await call.ctx.commit(build)
    established = call.ctx.snapshot.established(scope)
    return {"scope": scope, "established": established_view(established), "polls_ended": ended}


async def _reset_device(call: Call) -> dict[str, Any]:
    return await _reset(call, DEVICE_SCOPE + call.path["id"])


async def _reset_device_id(call: Call) -> dict[str, Any]:
    return await _reset(call, EAS_SCOPE + canonical_device_id(call.path["device_id"]))


_TAG = "backend types"
_DOC = (
    "400 without a note or for a throwaway DeviceId; 404 for an unknown device; 409 for a "
    "backend type no pool has, a retired device or a DeviceId of a managed device (reset "
    "the device)."
)

ROUTES = (
    Route(
        "GET",
        "/api/backend-types",
        _list,
        "The established backend type of every device and unregistered DeviceId",
        _TAG,
        response="EstablishedTypeList",
    ),
    Route(
        "POST",
        "/api/devices/{id}/reset-backend-type",
        _reset_device,
        "Reset a managed device's established backend type (all its DeviceIds)",
        _TAG,
        body=_RESET_BODY,
        response="BackendTypeReset",
        changes=True,
        conflict=True,
        description=_DOC,
    ),
    Route(
        "POST",
        "/api/device-ids/{device_id}/reset-backend-type",
        _reset_device_id,
        "Reset an unregistered EAS DeviceId's established backend type",
        _TAG,
        body=_RESET_BODY,
        response="BackendTypeReset",
        changes=True,
        conflict=True,
        description=_DOC,
    ),
)
