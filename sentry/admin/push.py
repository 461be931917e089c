"""Routes of the push method: Exchange settings and the labels that apply them.

Approach (the seed's push method). An Exchange setting names an account by
templates (``$USER_CUSTOM1$`` for the user name, ``$USER_CUSTOM2$`` for the
email, ...) resolved per device from its owner's attributes; a label applies
settings to devices. Templates are checked here, when the setting is saved:
an unknown ``$VARIABLE$`` is a 400 naming it (a known variable that has no
value for some owner is reported per device, in the device's pushed accounts);
``TEMPLATE_PATTERN`` states the same rule in the API document. A label may
name only settings and devices that exist (409 otherwise: the request is
well-formed, the state does not allow it); a setting still applied by a label
cannot be deleted (409); deleting a label also takes it off the devices that
carry it, in the same transaction. A setting's ``priority`` (EPMM's Exchange
App Priority, 1 first) decides which settings an Android device takes; a new
setting without one goes after every other.

Membership is never replaced by accident (``membership.py``): ``PUT`` of a
label changes its settings and keeps its devices unless the body says
``devices`` (exactly these) or ``add``/``remove``; ``POST
/api/labels/{name}/devices`` adds and removes devices explicitly.

Every write here that would push something that cannot work — a mailbox of
another backend type than the device's, one Exchange account too many on an
Android device — is refused with 409 naming each device and setting
(``sentry.policy.check_pushes``): the administrator is composing the push
right now, so the mistake is stopped before any device sees it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from sentry.model import ExchangeSetting, Label
from sentry.policy import Change, Changes, Snapshot, check_pushes, registry

from .errors import BadRequest, Conflict, NotFound
from .membership import members_of, membership_changes, replace_pairs
from .schema import ADD_OR_REMOVE, NOT_BLANK, WHITESPACE, Call, Field, Route
from .views import label_view, setting_view

__all__ = ["MAX_PRIORITY", "ROUTES", "TEMPLATE_PATTERN", "TEMPLATE_VARIABLES", "template_problem"]

MAX_PRIORITY = 9999

TEMPLATE_VARIABLES = (
    "USERID",
    "EMAIL",
    "USER_CUSTOM1",
    "USER_CUSTOM2",
    "USER_CUSTOM3",
    "USER_CUSTOM4",
)
_VARIABLE = re.compile(r"\$([A-Za-z0-9_]+)\$")  # as sentry.policy.templates resolves them


def _any_case(word: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)


def _template_pattern() -> str:
    """A template as a regular expression (ECMA and Python, no lookaround):
    not blank, and every ``$NAME$`` that ``_VARIABLE`` finds (left to right)
    a known variable. Tokens: a character other than ``$``; a run of ``$``
    whose last one opens a known variable (both ``$`` consumed); a run of
    ``$`` followed by a name that does not end in ``$``; at the end, a run of
    ``$`` and a name. A run of ``$`` is never split, as ``findall`` only
    starts a variable at its last ``$``."""
    known = "|".join(_any_case(v) for v in TEMPLATE_VARIABLES)
    word = "[A-Za-z0-9_]"
    var, loose, tail = f"\\$+(?:{known})\\$", f"\\$+{word}*[^A-Za-z0-9_$]", f"\\$+{word}*"
    token = f"(?:[^$]|{var}|{loose})"
    first = f"(?:[^{WHITESPACE}$]|{var}|{loose})"  # the first that is not white space
    return f"^[{WHITESPACE}]*(?:{first}{token}*(?:{tail})?|{tail})$"


TEMPLATE_PATTERN = _template_pattern()
_NOTE = Field("string", "why (kept in the audit log)")
_TEMPLATE_DOC = "a template; variables: " + ", ".join(f"${v}$" for v in TEMPLATE_VARIABLES)


def _template_mismatch(template: str) -> str:
    if not re.search(NOT_BLANK, template):
        return "must not be blank"
    return template_problem(template) or "has the wrong form"


_TEMPLATE = Field(
    "string", _TEMPLATE_DOC, required=True, pattern=TEMPLATE_PATTERN, mismatch=_template_mismatch
)
_SETTING_BODY = {
    "user_name": _TEMPLATE,
    "email": _TEMPLATE,
    "server": Field("string", "the server devices use (default: the gateway's FQDN)"),
    "priority": Field(
        "integer",
        "EPMM's Exchange App Priority: 1 applies first where a device takes only some "
        "(Android); default: after every other setting (a replaced setting keeps its own)",
        minimum=1,
        maximum=MAX_PRIORITY,
    ),
    "note": _NOTE,
}
_LABEL_BODY = {
    "settings": Field("strings", "Exchange settings the label applies"),
    "devices": Field("strings", "exactly the devices in the label (absent: membership kept)"),
    "add": Field("strings", "devices to add to the label"),
    "remove": Field("strings", "devices to take out of the label"),
    "note": _NOTE,
}
_DEVICES_OR_MOVES = {  # "devices" says exactly which; never together with add/remove
    "not": {"required": ["devices"], "anyOf": [{"required": ["add"]}, {"required": ["remove"]}]}
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
    settings = sorted(call.ctx.snapshot.settings.values(), key=lambda s: (s.priority, s.name))
    return {"items": [setting_view(s) for s in settings]}


async def _put_setting(call: Call) -> dict[str, Any]:
    name, body = call.path["name"], call.body
    problems = {f: p for f in ("user_name", "email") if (p := template_problem(body[f]))}
    if problems:
        raise BadRequest("invalid template", problems)
    server = str(body.get("server") or "").strip() or call.ctx.settings.gateway.fqdn

    def build(snap: Snapshot, now: float) -> Changes:
        priority = body.get("priority") or _priority_for(snap, name)
        user_name, email = body["user_name"].strip(), body["email"].strip()
        setting = ExchangeSetting(name, user_name, email, server, priority)
        changes = registry.put_setting(snap, setting, actor=call.actor, now=now, note=call.note)
        check_pushes(snap, changes)
        return changes

    await call.ctx.commit(build)
    return setting_view(call.ctx.snapshot.settings[name])


def _priority_for(snap: Snapshot, name: str) -> int:
    """A replaced setting keeps its priority; a new one goes after every other."""
    old = snap.settings.get(name)
    if old is not None:
        return old.priority
    return min(max((s.priority for s in snap.settings.values()), default=0) + 1, MAX_PRIORITY)


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
        raise Conflict("the label names what does not exist", problems)


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
        changes = membership_changes(
            snap, add_pairs, remove_pairs, actor=actor, now=now, note=note, base={name: label}
        )
        check_pushes(snap, changes)
        return changes

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
        changes = membership_changes(snap, *pairs, actor=call.actor, now=now, note=call.note)
        check_pushes(snap, changes)
        return changes

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
        check_pushes(snap, out)  # a freed Android slot may let another setting in
        return tuple(out)

    ended = await call.ctx.commit(build)
    return {"deleted": name, "polls_ended": ended}


_SETTING, _LABEL = "/api/exchange-settings/{name}", "/api/labels/{name}"

ROUTES = (
    Route(
        "GET",
        "/api/exchange-settings",
        _list_settings,
        "Exchange settings, in priority order",
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
        conflict=True,
        changes=True,
        description="400 naming an unknown $VARIABLE$ in a template. 409 with `problems` "
        "when the setting would push a mailbox of another backend type than a device's, or "
        "one Exchange account too many to an Android device.",
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
        body_rules=_DEVICES_OR_MOVES,
        response="Label",
        conflict=True,
        changes=True,
        description="`devices` sets exactly the devices in the label; `add`/`remove` change "
        "them; with neither, the label's membership is kept. 409 naming the Exchange "
        "settings or managed devices that do not exist, or with `problems` when the label "
        "would push a mailbox of another backend type than a device's, or one Exchange "
        "account too many to an Android device.",
    ),
    Route(
        "POST",
        _LABEL + "/devices",
        _label_members,
        "Add devices to a label or take them out",
        "push",
        body=_MEMBERS_BODY,
        body_rules=ADD_OR_REMOVE,
        response="Label",
        conflict=True,
        changes=True,
        description="409 naming the managed devices that do not exist, or with `problems` "
        "when a device added would be pushed a mailbox of another backend type or one "
        "Exchange account too many (Android).",
    ),
    Route(
        "DELETE",
        _LABEL,
        _delete_label,
        "Delete a label (and take it off its devices)",
        "push",
        body={"note": _NOTE},
        response="Deleted",
        conflict=True,
        changes=True,
        description="409 with `problems` when an Android device's freed slot would let in "
        "a setting that cannot work there.",
    ),
)
