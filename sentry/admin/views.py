"""JSON views of the model for the admin API, and their OpenAPI schemas.

Approach. Each ``*_view`` turns one frozen model value into JSON-ready data
(enums as values, sets as sorted lists, times as ISO 8601 UTC). ``SCHEMAS``
describes the same shapes for the OpenAPI document; the API tests validate
real answers against them, so a view and its schema cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from sentry.model import (
    Association,
    AssociationKey,
    AuditEntry,
    Device,
    EstablishedType,
    ExchangeSetting,
    HistoryEvent,
    Label,
    Override,
    Preferences,
    RuleAction,
    RuleField,
    RuleMatch,
    User,
    Violation,
    ViolationKind,
    principal_domain,
)
from sentry.policy import Decision, Forward, Refuse, Snapshot, Wipe, state_of
from sentry.policy.indexes import DEVICE_SCOPE
from sentry.policy.reasons import ordered
from sentry.store.base import AssociationState, StoreFault, association_state

from .context import iso
from .membership import labels_of, members_of

__all__ = [
    "SCHEMAS",
    "association_item",
    "audit_view",
    "decision_view",
    "device_view",
    "established_view",
    "history_view",
    "key_view",
    "label_view",
    "override_view",
    "prefs_view",
    "setting_view",
    "user_view",
    "violation_view",
]


def key_view(key: AssociationKey) -> dict[str, str]:
    return {"device_id": key.device_id, "user": key.user}


def override_view(override: Override | None) -> dict[str, Any] | None:
    if override is None:
        return None
    return {
        "kind": override.kind.value,
        "note": override.note,
        "actor": override.actor,
        "at": iso(override.at),
        "account_only": override.account_only,
        "pre_approved": override.pre_approved,
    }


def association_item(row: Association) -> dict[str, Any]:
    """One row of the ActiveSync association list."""
    return {
        **key_view(row.key),
        "domain": principal_domain(row.key.user),
        "throwaway": row.throwaway,
        "verified": row.verified_at is not None,
        "verified_at": iso(row.verified_at),
        "device_type": row.device_type,
        "user_agent": row.user_agent,
        "protocol_version": row.protocol_version,
        "state": association_state(row).value,
        "admin_state": state_of(row).value,
        "verdict": row.verdict.value,
        "reasons": [r.value for r in ordered(row.reasons)],
        "violations": sorted(row.violations),
        "linked": row.device is not None,
        "device": row.device,
        "unlinked": None if row.unlinked is None else row.unlinked.value,
        "manual_link": row.manual_link,
        "override": override_view(row.override),
        "pool": row.pool,
        "backend_type": row.backend_type,
        "first_seen": iso(row.first_seen),
        "last_seen": None if row.never_seen else iso(row.last_seen),
        "never_seen": row.never_seen,
        "ambiguous_policy": row.ambiguous_policy,
        "access_rule": row.access_rule,
    }


def established_view(e: EstablishedType | None) -> dict[str, Any] | None:
    """A device's established backend type: what, since when, set by whom."""
    if e is None:
        return None
    return {
        "scope": e.scope,
        "backend_type": e.backend_type,
        "at": iso(e.at),
        "set_by": None if e.key is None else key_view(e.key),
        "actor": e.actor,
        "note": e.note,
    }


def decision_view(decision: Decision) -> dict[str, Any]:
    """The decision the table gives a row now."""
    out: dict[str, Any] = {
        "reasons": [r.value for r in ordered(decision.reasons)],
        "violations": sorted(decision.violations),
    }
    if decision.rule is not None:  # the device access rule that matched
        out["rule"] = decision.rule
    if isinstance(decision, Forward):
        return {
            "kind": "forward",
            "pool": decision.pool,
            "backend_type": decision.backend_type,
            **out,
        }
    if isinstance(decision, Refuse):
        return {"kind": "refuse", "status": int(decision.status), **out}
    assert isinstance(decision, Wipe)
    return {"kind": "wipe", "account_only": decision.account_only, **out}


def history_view(event: HistoryEvent) -> dict[str, Any]:
    return {"at": iso(event.at), "kind": event.kind, "detail": dict(event.detail)}


def audit_view(entry: AuditEntry) -> dict[str, Any]:
    return {
        "at": iso(entry.at),
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "note": entry.note,
        "before": None if entry.before is None else dict(entry.before),
        "after": None if entry.after is None else dict(entry.after),
    }


def user_view(user: User) -> dict[str, Any]:
    return {
        "principal": user.principal,
        "email": user.email,
        "display_name": user.display_name,
        "source": user.source.value,
        "custom1": user.custom1,
        "custom2": user.custom2,
        "custom3": user.custom3,
        "custom4": user.custom4,
        "aliases": sorted(user.aliases),
        "missing_since": iso(user.missing_since),
    }


def violation_view(violation: Violation) -> dict[str, Any]:
    """One compliance violation: its kind (the vocabulary) and its detail ("" for none)."""
    return {"kind": violation.kind.value, "detail": violation.detail}


def device_view(device: Device, snapshot: Snapshot) -> dict[str, Any]:
    """A managed device; ``labels`` are the labels it is in (``membership``)."""
    established = snapshot.established(DEVICE_SCOPE + device.id)
    return {
        "id": device.id,
        "owner": device.owner,
        "platform": device.platform.value,
        "eas_device_ids": sorted(device.eas_ids),
        "compliant": device.compliant,
        "violations": sorted(device.violation_kinds),
        "violation_details": [violation_view(v) for v in sorted(device.violations)],
        "labels": sorted(labels_of(snapshot, device.id)),
        "retired": device.retired,
        "backend_type": established_view(established),
    }


def setting_view(setting: ExchangeSetting) -> dict[str, Any]:
    return {
        "name": setting.name,
        "user_name": setting.user_name,
        "email": setting.email,
        "server": setting.server,
        "priority": setting.priority,
    }


def label_view(label: Label, snapshot: Snapshot) -> dict[str, Any]:
    """A label; ``devices`` are the devices in it (``membership``)."""
    return {
        "name": label.name,
        "settings": sorted(label.settings),
        "devices": sorted(members_of(snapshot, label.name)),
    }


def prefs_view(prefs: Preferences) -> dict[str, Any]:
    return {
        "auto_block_unregistered": prefs.auto_block_unregistered,
        "max_devices_per_mailbox": prefs.max_devices_per_mailbox,
        "max_mailboxes_per_device": prefs.max_mailboxes_per_device,
        "refusal_style": prefs.refusal_style.value,
        "new_device_access_when_registry_unreachable": (
            prefs.new_device_access_when_registry_unreachable.value
        ),
        "compliance_overrides_allow": prefs.compliance_overrides_allow,
    }


# --- OpenAPI schemas of the views ---

_S: dict[str, Any] = {"type": "string"}
_NS: dict[str, Any] = {"type": "string", "nullable": True}
_B: dict[str, Any] = {"type": "boolean"}
_I: dict[str, Any] = {"type": "integer"}
_NI: dict[str, Any] = {"type": "integer", "nullable": True}
_OBJ: dict[str, Any] = {"type": "object"}
_NOBJ: dict[str, Any] = {"type": "object", "nullable": True}
_TEXTS: dict[str, Any] = {"type": "array", "items": _S}
_KINDS: dict[str, Any] = {
    "type": "array",
    "items": {"type": "string", "enum": [k.value for k in ViolationKind]},
}
_FAULTS = [f.value for f in StoreFault]


def _object(props: dict[str, Any], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    required = [name for name in props if name not in optional]
    return {"type": "object", "required": required, "properties": props}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _array(name: str) -> dict[str, Any]:
    return {"type": "array", "items": _ref(name)}


def _page(item: str) -> dict[str, Any]:
    return _object({"items": _array(item), "total": _I, "offset": _I, "limit": _I})


_KEY = {"device_id": _S, "user": _S}
_ESTABLISHED = {
    **_object(
        {
            "scope": _S,
            "backend_type": _S,
            "at": _S,
            "set_by": {**_object(_KEY), "nullable": True},
            "actor": _NS,
            "note": _S,
        }
    ),
    "nullable": True,
}
_OVERRIDE = _object(
    {"kind": _S, "note": _S, "actor": _S, "at": _S, "account_only": _B, "pre_approved": _B}
)
_ASSOCIATION = {
    **_KEY,
    "domain": _NS,
    "throwaway": _B,
    "verified": _B,
    "verified_at": _NS,
    "device_type": _S,
    "user_agent": _NS,
    "protocol_version": _NS,
    "state": {"type": "string", "enum": [s.value for s in AssociationState]},
    "admin_state": _S,
    "verdict": _S,
    "reasons": _TEXTS,
    "violations": _KINDS,
    "linked": _B,
    "device": _NS,
    "unlinked": _NS,
    "manual_link": _NS,
    "override": {**_OVERRIDE, "nullable": True},
    "pool": _NS,
    "backend_type": _NS,
    "first_seen": _S,
    "last_seen": _NS,
    "never_seen": _B,
    "ambiguous_policy": _B,
    "access_rule": {
        "type": "string",
        "nullable": True,
        "description": "the device access rule the last decision matched",
    },
}
_DECISION = _object(
    {"kind": _S, "reasons": _TEXTS, "violations": _KINDS, "pool": _S, "backend_type": _S}
    | {"status": _I, "account_only": _B, "rule": _S},
    optional=("pool", "backend_type", "status", "account_only", "rule"),
)
_ACCESS_RULE = _object(
    {
        "name": _S,
        "position": _I,
        "field": {"type": "string", "enum": [f.value for f in RuleField]},
        "match": {"type": "string", "enum": [m.value for m in RuleMatch]},
        "value": _S,
        "action": {"type": "string", "enum": [a.value for a in RuleAction]},
        "note": _S,
        "actor": _S,
        "at": _S,
    }
)
_HISTORY = _object({"at": _S, "kind": _S, "detail": _OBJ})
_DEVICE = {
    "id": _S,
    "owner": _S,
    "platform": _S,
    "eas_device_ids": _TEXTS,
    "compliant": _B,
    "violations": _KINDS,
    "violation_details": {
        "type": "array",
        "items": _object({"kind": _KINDS["items"], "detail": _S}),
    },
    "labels": _TEXTS,
    "retired": _B,
    "backend_type": _ESTABLISHED,
}
_PUSHED = _object({"setting": _S, "user_name": _S, "email": _S, "principal": _S})
_CUSTOM = {f"custom{i}": _NS for i in range(1, 5)}
_USER = {
    "principal": _S,
    "email": _S,
    "display_name": _S,
    "source": _S,
    **_CUSTOM,
    "aliases": _TEXTS,
    "missing_since": _NS,
}
_SERVER = _object(
    {
        "url": _S,
        "state": _S,
        "healthy": _B,
        "failures": _I,
        "reason": _NS,
        "detail": _NS,
        "since": _NS,
        "last_check": _NS,
    }
)
_POOL = _object({"name": _S, "type": _S, "healthy": _I, "ready": _B, "servers": _array("Server")})

SCHEMAS: dict[str, Any] = {
    "Key": _object(_KEY),
    "Association": _object(_ASSOCIATION),
    "AssociationPage": _page("Association"),
    "Decision": _DECISION,
    "HistoryEvent": _HISTORY,
    "AssociationDetail": _object(
        {
            **_ASSOCIATION,
            "backend_scope": _S,
            "established_backend_type": _ESTABLISHED,
            "decision": _ref("Decision"),
            "device_information": _NOBJ,
            "managed_device": {**_object(_DEVICE), "nullable": True},
            "history": _array("HistoryEvent"),
        }
    ),
    "ActionResult": _object(
        {"association": {"allOf": [_ref("Association")], "nullable": True}, "polls_ended": _I}
    ),
    "BulkResult": _object(
        {
            "matched": _I,
            "changed": _array("Key"),
            "skipped": {"type": "array", "items": _object({"key": _ref("Key"), "error": _S})},
            "dry_run": _B,
            "polls_ended": _I,
        }
    ),
    "User": _object(_USER),
    "PushProblem": _object({"device": _S, "setting": _S, "reason": _S, "message": _S}),
    "UserChange": _object({**_USER, "push_problems": _array("PushProblem")}),
    "UserDeleted": _object(
        {"deleted": _S, "polls_ended": _I, "push_problems": _array("PushProblem")}
    ),
    "UserDetail": _object({**_USER, "devices": _TEXTS, "associations": _array("Key")}),
    "UserPage": _page("User"),
    "Device": _object(_DEVICE),
    "DevicePage": _page("Device"),
    "PushedAccount": _PUSHED,
    "DeviceDetail": _object(
        {
            **_DEVICE,
            "pushed": _array("PushedAccount"),
            "push_errors": _TEXTS,
            "push_problems": _array("PushProblem"),
            "associations": _array("Association"),
        }
    ),
    "DeviceChange": _object({"device": _ref("Device"), "polls_ended": _I}),
    "EstablishedTypeList": _object({"items": {"type": "array", "items": _ESTABLISHED}}),
    "BackendTypeReset": _object({"scope": _S, "established": _ESTABLISHED, "polls_ended": _I}),
    "ExchangeSetting": _object(
        {"name": _S, "user_name": _S, "email": _S, "server": _S, "priority": _I}
    ),
    "ExchangeSettingList": _object({"items": _array("ExchangeSetting")}),
    "Label": _object({"name": _S, "settings": _TEXTS, "devices": _TEXTS}),
    "LabelList": _object({"items": _array("Label")}),
    "Deleted": _object({"deleted": _S, "polls_ended": _I}),
    "Preferences": _object(
        {
            "auto_block_unregistered": _B,
            "max_devices_per_mailbox": _NI,
            "max_mailboxes_per_device": _NI,
            "refusal_style": _S,
            "new_device_access_when_registry_unreachable": _S,
            "compliance_overrides_allow": _B,
            "sources": {
                "type": "object",
                "description": "where each value comes from: admin, file or default",
                "additionalProperties": {"type": "string", "enum": ["admin", "file", "default"]},
            },
        }
    ),
    "Server": _SERVER,
    "Pool": _POOL,
    "Pools": _object({"items": _array("Pool"), "routing": _OBJ}),
    "AuditEntry": _object(
        {"at": _S, "actor": _S, "action": _S, "target": _S, "note": _S}
        | {"before": _NOBJ, "after": _NOBJ}
    ),
    "AuditPage": _page("AuditEntry"),
    "StoreStatus": _object(
        {
            "kind": {"type": "string", "enum": ["sqlite", "memory"]},
            "path": _NS,
            "healthy": _B,
            "fault": {"type": "string", "nullable": True, "enum": [*_FAULTS, None]},
            "detail": _NS,
            "since": _NS,
            "advice": _NS,
        }
    ),
    "AccessRule": _ACCESS_RULE,
    "AccessRuleList": _object({"items": _array("AccessRule")}),
    "AccessRuleChange": _object({"rule": _ref("AccessRule"), "polls_ended": _I}),
    "OpenApi": _OBJ,
}
"""Component schemas of the answers, by name (``Route.response``)."""
