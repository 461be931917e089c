"""Routes of the push method: Exchange settings and the labels that apply them.

Approach (the seed's push method). An Exchange setting names an account by
templates (``$USER_CUSTOM1$`` for the user name, ``$USER_CUSTOM2$`` for the
email, ...) resolved per device from its owner's attributes; a label applies
settings to devices. Templates are checked here, when the setting is saved:
an unknown ``$VARIABLE$`` is a 400 naming it (a known variable that has no
value for some owner is reported per device, in the device's pushed accounts).
A label may name only settings and devices that exist; a setting still
applied by a label cannot be deleted (409); deleting a label also takes it
off the devices that carry it, in the same transaction.

Membership is never replaced by accident (``membership.py``): ``PUT`` of a
label changes its settings and keeps its devices unless the body says
``devices`` (exactly these) or ``add``/``remove``; ``POST
/api/labels/{name}/devices`` adds and removes devices explicitly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from sentry.model import ExchangeSetting, Label
from sentry.policy import Change, Changes, Snapshot, registry

from .errors import BadRequest, Conflict, NotFound
from .membership import members_of, membership_changes, replace_pairs
from .schema import Call, Field, Route
from .views import label_view, setting_view

__all__ = ["ROUTES", "TEMPLATE_VARIABLES", "template_problem"]

TEMPLATE_VARIABLES = (
    "USERID",
    "EMAIL",
    "USER_CUSTOM1",
    "USER_CUSTOM2",
    "USER_CUSTOM3",
    "USER_CUSTOM4",
)
_VARIABLE = re.compile(r"\$([A-Za-z0-9_]+)\$")  # as sentry.policy.templates resolves them
_NOTE = Field("string", "why (kept in the audit log)")
_TEMPLATE_DOC = "a template; variables: " + ", ".join(f"${v}$" for v in TEMPLATE_VARIABLES)
_SETTING_BODY = {
    "user_name": Field("string", _TEMPLATE_DOC, required=True, blank=False),
    "email": Field("string", _TEMPLATE_DOC, required=True, blank=False),
    "server": Field("string", "the server devices use (default: the gateway's FQDN)"),
    "note": _NOTE,
}
_LABEL_BODY = {
    "settings": Field("strings", "Exchange settings the label applies"),
    "devices": Field("strings", "exactly the devices in the label (absent: membership kept)"),
    "add": Field("strings", "devices to add to the label"),
    "remove": Field("strings", "devices to take out of the label"),
    "note": _NOTE,
}
_MEMBERS_BODY = {
    "add": Field("strings", "devices to add to the label"),
    "remove": Field("strings", "devices to take out of the label"),
    "note": _NOTE,
}


def template_problem(template: str) -> str | None:
    """What is wrong with a template (an unknown variable), or None."""
    unknown = [m for m in _VARIABLE.findall(template) if m.upper() not in TEMPLATE_VARIABLES]
    if not unknown:
        return None
    known = ", ".join(f"${v}$" for v in TEMPLATE_VARIABLES)
    return f"unknown variable ${unknown[0]}$ (known: {known})"


# --- Exchange settings ---


async def _list_settings(call: Call) -> dict[str, Any]:
    settings = sorted(call.ctx.snapshot.settings.values(), key=lambda s: s.name)
    return {"items": [setting_view(s) for s in settings]}


async def _put_setting(call: Call) -> dict[str, Any]:
    name, body = call.path["name"], call.body
    problems = {f: p for f in ("user_name", "email") if (p := template_problem(body[f]))}
    if problems:
        raise BadRequest("invalid template", problems)
    server = str(body.get("server") or "").strip() or call.ctx.settings.gateway.fqdn
    setting = ExchangeSetting(name, body["user_name"].strip(), body["email"].strip(), server)
    await call.ctx.commit(
        lambda snap, now: registry.put_setting(
            snap, setting, actor=call.actor, now=now, note=call.note
        )
    )
    return setting_view(call.ctx.snapshot.settings[name])


async def _delete_setting(call: Call) -> dict[str, Any]:
    name = call.path["name"]

    def build(snap: Snapshot, now: float) -> Changes:
        users = sorted(lb.name for lb in snap.labels.values() if name in lb.settings)
        if name in snap.settings and users:
            raise Conflict(f"Exchange setting {name!r} is applied by labels: {', '.join(users)}")
        return registry.delete_setting(snap, name, actor=call.actor, now=now, note=call.note)

    ended = await call.ctx.commit(build)
    return {"deleted": name, "polls_ended": ended}


# --- Labels ---


async def _list_labels(call: Call) -> dict[str, Any]:
    snap = call.ctx.snapshot
    labels = sorted(snap.labels.values(), key=lambda lb: lb.name)
    return {"items": [label_view(lb, snap) for lb in labels]}


def _check_label(snap: Snapshot, settings: frozenset[str], devices: frozenset[str]) -> None:
    """Every setting and device a label body names exists (all problems at once)."""
    problems = {}
    missing = sorted(settings - snap.settings.keys())
    if missing:
        problems["settings"] = f"no such Exchange setting: {', '.join(missing)}"
    missing = sorted(devices - snap.devices.keys())
    if missing:
        problems["devices"] = f"no such managed device: {', '.join(missing)}"
    if problems:
        raise BadRequest("invalid label", problems)


def _names(body: Mapping[str, Any], field: str) -> frozenset[str]:
    return frozenset(v.strip() for v in body.get(field, ()))


def _moves(body: Mapping[str, Any]) -> tuple[frozenset[str], frozenset[str]]:
    """The ``add`` and ``remove`` device lists, checked to be distinct."""
    add, remove = _names(body, "add"), _names(body, "remove")
    both = sorted(add & remove)
    if both:
        raise BadRequest("invalid membership", {"remove": f"also in add: {', '.join(both)}"})
    return add, remove


async def _put_label(call: Call) -> dict[str, Any]:
    name, body = call.path["name"], call.body
    if "devices" in body and ("add" in body or "remove" in body):
        raise BadRequest("invalid label", {"devices": "not with add or remove"})
    settings, (add, remove) = _names(body, "settings"), _moves(body)

    def build(snap: Snapshot, now: float) -> Changes:
        _check_label(snap, settings, _names(body, "devices") | add | remove)
        old = snap.labels.get(name)
        label = Label(name, settings, old.devices if old is not None else frozenset())
        if "devices" in body:
            wanted = {(name, d) for d in _names(body, "devices")}
            current = {(name, d) for d in members_of(snap, name)}
            add_pairs, remove_pairs = replace_pairs(current, wanted)
        else:
            add_pairs, remove_pairs = {(name, d) for d in add}, {(name, d) for d in remove}
        actor, note = call.actor, call.note
        return membership_changes(
            snap, add_pairs, remove_pairs, actor=actor, now=now, note=note, base={name: label}
        )

    await call.ctx.commit(build)
    return label_view(call.ctx.snapshot.labels[name], call.ctx.snapshot)


async def _label_members(call: Call) -> dict[str, Any]:
    name = call.path["name"]
    add, remove = _moves(call.body)

    def build(snap: Snapshot, now: float) -> Changes:
        if name not in snap.labels:
            raise NotFound(f"no label {name!r}")
        if not add and not remove:
            raise BadRequest("nothing to change", {"add": "give devices to add or remove"})
        pairs = {(name, d) for d in add}, {(name, d) for d in remove}
        return membership_changes(snap, *pairs, actor=call.actor, now=now, note=call.note)

    await call.ctx.commit(build)
    return label_view(call.ctx.snapshot.labels[name], call.ctx.snapshot)


async def _delete_label(call: Call) -> dict[str, Any]:
    name = call.path["name"]

    def build(snap: Snapshot, now: float) -> Changes:
        actor, note = call.actor, call.note
        out: list[Change] = [*registry.delete_label(snap, name, actor=actor, now=now, note=note)]
        for device in sorted(snap.devices.values(), key=lambda d: d.id):
            if name in device.labels:
                new = replace(device, labels=device.labels - {name})
                out += registry.register_device(snap, new, actor=actor, now=now, note=note)
        return tuple(out)

    ended = await call.ctx.commit(build)
    return {"deleted": name, "polls_ended": ended}


_SETTING, _LABEL = "/api/exchange-settings/{name}", "/api/labels/{name}"

ROUTES = (
    Route(
        "GET",
        "/api/exchange-settings",
        _list_settings,
        "Exchange settings",
        "push",
        response="ExchangeSettingList",
    ),
    Route(
        "PUT",
        _SETTING,
        _put_setting,
        "Create or replace an Exchange setting",
        "push",
        body=_SETTING_BODY,
        response="ExchangeSetting",
        changes=True,
        description="400 naming an unknown $VARIABLE$ in a template.",
    ),
    Route(
        "DELETE",
        _SETTING,
        _delete_setting,
        "Delete an Exchange setting",
        "push",
        body={"note": _NOTE},
        response="Deleted",
        conflict=True,
        changes=True,
        description="409 while a label applies the setting.",
    ),
    Route("GET", "/api/labels", _list_labels, "Labels", "push", response="LabelList"),
    Route(
        "PUT",
        _LABEL,
        _put_label,
        "Create a label or change its settings (devices kept unless given)",
        "push",
        body=_LABEL_BODY,
        response="Label",
        changes=True,
        description="`devices` sets exactly the devices in the label; `add`/`remove` change "
        "them; with neither, the label's membership is kept.",
    ),
    Route(
        "POST",
        _LABEL + "/devices",
        _label_members,
        "Add devices to a label or take them out",
        "push",
        body=_MEMBERS_BODY,
        response="Label",
        changes=True,
    ),
    Route(
        "DELETE",
        _LABEL,
        _delete_label,
        "Delete a label (and take it off its devices)",
        "push",
        body={"note": _NOTE},
        response="Deleted",
        changes=True,
    ),
)
