"""Routes of the ActiveSync policies the gateway enforces (Assign / Revert Policy).

Approach. Named policies are created or replaced with ``PUT
/api/eas-policies/{name}`` (the EASProvisionDoc settings by their spec names,
each checked against ``sentry.eas.policydoc.FIELDS``: 400 naming the field
and its bounds); a policy still assigned cannot be deleted (409).
``PUT /api/eas-policy-assignments`` assigns a policy to a user, a label, an
association (``DEVICEID/user``) or as the default; ``policy: null`` reverts
that assignment (the device then provisions with its backend again). ``GET
/api/eas-policies/devices/{device_id}/{user}`` says which policy a device
gets, which assignment won (resolution: ``sentry.policy.easpolicy``) and the
keys the association holds. Every change is audited and takes effect at the
device's next request.
"""

from __future__ import annotations

from typing import Any

from sentry.eas.policydoc import FIELDS, settings_digest
from sentry.model import AssociationKey, EasPolicy, PolicyAssignments, canonical_device_id
from sentry.policy.easpolicy import (
    SCOPES,
    assign,
    delete_policy,
    device_policy,
    policy_from,
    put_policy,
)

from .context import iso
from .errors import NotFound
from .schema import Call, Field, Route

__all__ = ["ROUTES", "SCHEMAS", "assignments_view", "policy_view"]

_NOTE = Field("string", "why (kept in the audit log)")
_SETTINGS_DOC = "EASProvisionDoc settings by their MS-ASPROV names (400 naming one out of " + (
    "its bounds): " + "; ".join(f"{name}: {spec.describe()}" for name, spec in FIELDS.items())
)
_POLICY_BODY = {
    "settings": Field("object", _SETTINGS_DOC, free_form=True),
    "description": Field("string", "free text", max_length=1000),
    "allow_non_provisionable": Field(
        "boolean", "accept devices that acknowledge the policy as partially or not applied"
    ),
    "note": _NOTE,
}
_ASSIGN_BODY = {
    "scope": Field("string", "where the assignment applies", required=True, choices=SCOPES),
    "target": Field(
        "string", "a user, a label name or DEVICEID/user (not used for default)", max_length=300
    ),
    "policy": Field(
        "string",
        "the policy name; null reverts the assignment",
        nullable=True,
        required=True,
        max_length=128,
    ),
    "note": _NOTE,
}
_NAME = "/api/eas-policies/{name}"


def policy_view(policy: EasPolicy) -> dict[str, Any]:
    """One named policy."""
    return {
        "name": policy.name,
        "settings": {
            name: bool(value) if FIELDS[name].boolean else value for name, value in policy.settings
        },
        "description": policy.description,
        "allow_non_provisionable": policy.allow_non_provisionable,
        "digest": settings_digest(policy.settings),
    }


def assignments_view(assignments: PolicyAssignments) -> dict[str, Any]:
    """Where each policy is assigned."""
    return {
        "default": assignments.default,
        "users": dict(sorted(assignments.users.items())),
        "labels": dict(sorted(assignments.labels.items())),
        "associations": dict(sorted(assignments.associations.items())),
    }


async def _list_eas_policies(call: Call) -> dict[str, Any]:
    snap = call.ctx.snapshot
    items = [policy_view(p) for _, p in sorted(snap.eas_policies.items())]
    return {"items": items, "assignments": assignments_view(snap.policy_assignments)}


async def _get_eas_policy(call: Call) -> dict[str, Any]:
    policy = call.ctx.snapshot.eas_policies.get(call.path["name"])
    if policy is None:
        raise NotFound(f"no ActiveSync policy {call.path['name']!r}")
    return policy_view(policy)


async def _put_eas_policy(call: Call) -> dict[str, Any]:
    policy = policy_from(call.path["name"], call.body)
    await call.ctx.commit(
        lambda snap, now: put_policy(snap, policy, actor=call.actor, now=now, note=call.note)
    )
    return policy_view(call.ctx.snapshot.eas_policies[policy.name])


async def _delete_eas_policy(call: Call) -> dict[str, Any]:
    name = call.path["name"]
    await call.ctx.commit(
        lambda snap, now: delete_policy(snap, name, actor=call.actor, now=now, note=call.note)
    )
    return {"deleted": name, "polls_ended": 0}


async def _assign_eas_policy(call: Call) -> dict[str, Any]:
    body = call.body
    scope, target, policy = body["scope"], body.get("target") or "", body["policy"]
    await call.ctx.commit(
        lambda snap, now: assign(
            snap, scope, target, policy, actor=call.actor, now=now, note=call.note
        )
    )
    return assignments_view(call.ctx.snapshot.policy_assignments)


async def _eas_policy_of_device(call: Call) -> dict[str, Any]:
    snap = call.ctx.snapshot
    user = snap.canonical(call.path["user"]) or call.path["user"]
    key = AssociationKey(canonical_device_id(call.path["device_id"]), user)
    if key not in snap:
        raise NotFound(f"no association {key.device_id}/{key.user}")
    resolved = device_policy(snap, key)
    record = snap.provisioning.get(key)
    provisioned = None
    if record is not None:
        provisioned = {
            "policy": record.policy,
            "digest": record.digest,
            "at": iso(record.at),
            "acknowledged": record.issued is not None,
            "pending": record.pending is not None,
            "backend_key": record.backend_key is not None,
        }
    return {
        "device_id": key.device_id,
        "user": key.user,
        "policy": None if resolved is None else resolved.policy.name,
        "source": None if resolved is None else resolved.source,
        "digest": None if resolved is None else resolved.digest,
        "provisioned": provisioned,
    }


ROUTES = (
    Route(
        "GET",
        "/api/eas-policies",
        _list_eas_policies,
        "ActiveSync policies the gateway enforces, and their assignments",
        "eas-policies",
        response="EasPolicyList",
    ),
    Route(
        "GET", _NAME, _get_eas_policy, "One ActiveSync policy", "eas-policies", response="EasPolicy"
    ),
    Route(
        "PUT",
        _NAME,
        _put_eas_policy,
        "Create or replace an ActiveSync policy",
        "eas-policies",
        body=_POLICY_BODY,
        response="EasPolicy",
        changes=True,
        description="Settings use the EASProvisionDoc names of MS-ASPROV; a setting not given "
        "is not sent to the device. 400 naming a setting out of its bounds. Devices holding a "
        "key for the old content provision again at their next request.",
    ),
    Route(
        "DELETE",
        _NAME,
        _delete_eas_policy,
        "Delete an ActiveSync policy",
        "eas-policies",
        body={"note": _NOTE},
        response="Deleted",
        conflict=True,
        changes=True,
        description="409 while the policy is assigned anywhere.",
    ),
    Route(
        "PUT",
        "/api/eas-policy-assignments",
        _assign_eas_policy,
        "Assign an ActiveSync policy (Assign Policy) or revert an assignment (Revert Policy)",
        "eas-policies",
        body=_ASSIGN_BODY,
        response="EasPolicyAssignments",
        conflict=True,
        changes=True,
        description="Resolution per device: association > user > label > default; every "
        "mailbox of a device gets the policy the most specific assignment on any of them "
        "names (ties: the policy name first in code-point order). `policy: null` reverts. "
        "409 naming a policy or label that does not exist.",
    ),
    Route(
        "GET",
        "/api/eas-policies/devices/{device_id}/{user}",
        _eas_policy_of_device,
        "Which ActiveSync policy an association's device gets, and why (404: no such row)",
        "eas-policies",
        response="EasPolicyResolution",
    ),
)

_S: dict[str, Any] = {"type": "string"}
_NS: dict[str, Any] = {"type": "string", "nullable": True}
_B: dict[str, Any] = {"type": "boolean"}
_MAP: dict[str, Any] = {"type": "object", "additionalProperties": _S}


def _object(props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": list(props), "properties": props}


SCHEMAS: dict[str, Any] = {
    "EasPolicy": _object(
        {
            "name": _S,
            "settings": {"type": "object"},
            "description": _S,
            "allow_non_provisionable": _B,
            "digest": _S,
        }
    ),
    "EasPolicyAssignments": _object(
        {"default": _NS, "users": _MAP, "labels": _MAP, "associations": _MAP}
    ),
    "EasPolicyList": _object(
        {
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/EasPolicy"}},
            "assignments": {"$ref": "#/components/schemas/EasPolicyAssignments"},
        }
    ),
    "EasPolicyResolution": _object(
        {
            "device_id": _S,
            "user": _S,
            "policy": _NS,
            "source": _NS,
            "digest": _NS,
            "provisioned": {"type": "object", "nullable": True},
        }
    ),
}
