"""HTML forms as admin API input: pure functions, no I/O.

Approach. A browser sends strings; the API takes typed JSON. These
functions only pick the form fields an API route takes and give each the
JSON kind the route's ``Field`` says (``"true"`` becomes ``true`` for a
boolean, a blank optional value is left out); every check of the values
themselves is the API's (``schema.parse_body``/``parse_query``), so the
console accepts exactly what the API accepts and shows the API's message
when it refuses. Filter fields keep their API names in the list's query
string (``/?state=blocked&user=alice``) and carry a ``filter.`` prefix in
the bulk forms, next to the action's own fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sentry.admin.listing import FILTER_FIELDS
from sentry.admin.schema import Field, Fields

__all__ = [
    "FILTER_PREFIX",
    "PAGE_SIZES",
    "ActionForm",
    "action_form",
    "bulk_form",
    "changed_preferences",
    "list_query",
    "typed",
]

FILTER_PREFIX = "filter."
PAGE_SIZES = (25, 50, 100, 250, 500, 1000)
_TRUE, _FALSE = "true", "false"
_ROW_ACTIONS = {
    "allow": "allow",
    "block": "block",
    "reset": "reset",
    "wipe": "wipe",
    "wipe_account": "wipe",
    "remove": "remove",
    "link": "link",
}
"""Console buttons -> API actions (an account-only wipe is a wipe with its option)."""


def typed(f: Field, text: str) -> Any:
    """A form string as the JSON kind of ``f`` (the API checks the value)."""
    value = text.strip()
    if f.kind == "boolean" and value in (_TRUE, _FALSE):
        return value == _TRUE
    if f.kind == "integer" and value.lstrip("-").isdigit():
        return int(value)
    return value


def list_query(query: Mapping[str, str], names: Iterable[str]) -> dict[str, str]:
    """The query parameters among ``names`` (an API route's) that were given
    (blank = any; anything else a browser sent is dropped)."""
    wanted = set(names)
    return {k: v.strip() for k, v in query.items() if k in wanted and v.strip()}


def _filter_of(form: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, text in form.items():
        name = key.removeprefix(FILTER_PREFIX)
        if key.startswith(FILTER_PREFIX) and name in FILTER_FIELDS and text.strip():
            out[name] = typed(FILTER_FIELDS[name], text)
    return out


@dataclass(frozen=True, slots=True)
class ActionForm:
    """An API action and its JSON body, or what is wrong with the form."""

    action: str
    body: dict[str, Any]
    problem: str | None = None


def action_form(form: Mapping[str, str]) -> ActionForm:
    """The row action a console form asks for (the button pressed, the note,
    the device for Link To)."""
    button = form.get("action", "")
    action = _ROW_ACTIONS.get(button)
    if action is None:
        return ActionForm(button, {}, f"unknown action {button[:40]!r}")
    body: dict[str, Any] = {"note": form.get("note", "")}
    if button == "wipe_account":
        body["account_only"] = True
    if action == "link":
        body["device"] = form.get("device", "").strip()
    return ActionForm(action, body)


def bulk_form(form: Mapping[str, str], *, dry_run: bool) -> ActionForm:
    """A bulk action: the filter carried by the form, or every row when the
    form has no filter and says ``all``."""
    base = action_form(form)
    if base.problem is not None or base.action == "link":
        return ActionForm(base.action, {}, base.problem or "link is not a bulk action")
    body = {**base.body, "dry_run": dry_run}
    where = _filter_of(form)
    if where:
        body["filter"] = where
    elif form.get("all") == _TRUE:
        body["all"] = True
    return ActionForm(base.action, body)


def changed_preferences(
    form: Mapping[str, str], current: Mapping[str, Any], spec: Fields
) -> dict[str, Any]:
    """The ``PUT /api/preferences`` body of the preferences form: only the
    values that differ from ``current`` (a value sent becomes admin-set),
    the preferences handed back to the file, and the note."""
    released = sorted(k.removeprefix("use_file.") for k in form if k.startswith("use_file."))
    body: dict[str, Any] = {}
    for name, f in spec.items():
        if name in ("note", "use_file") or name not in form or name in released:
            continue
        text = form[name].strip()
        value = None if (text == "" and f.nullable) else typed(f, text)
        if value != current.get(name):
            body[name] = value
    if released:
        body["use_file"] = released
    if body and form.get("note", "").strip():
        body["note"] = form["note"]
    return body
