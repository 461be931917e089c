"""The console's changes: each form is one admin API call, then a redirect.

Approach. A change handler reads its form (``forms.py`` turns it into the
API's JSON), makes the one API call the CLI would make (``state.call_api``:
same route, same checks, same audit entry and change log, the signed-in
administrator as the actor) and answers 303 to the page to show next, with
a message saying what happened (Post/Redirect/Get: reloading the next page
repeats nothing). A refusal of the API becomes that message (its status and
text) on the page the change came from; a read-only session's change is the
API's 403, answered as such.

Bulk actions run twice: *preview* calls the bulk route with ``dry_run`` and
renders the rows that would change and those that would be skipped (and
why), with a form to confirm; *apply* repeats the same call without
``dry_run``. The result says how many rows changed, and says so when the
list changed between the preview and the confirmation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from sentry.admin.api import api_error, find_route
from sentry.admin.errors import ApiError, Forbidden

from .forms import FILTER_PREFIX, ActionForm, action_form, bulk_form, changed_preferences
from .pages import explain, seg
from .render import redirect, render
from .signin import local_next
from .state import call_api, console_of, form_fields, session_of

__all__ = ["PREVIEW_ROWS", "ROUTES"]

PREVIEW_ROWS = 500
"""Rows a bulk preview lists (the counts are always complete)."""
_DONE = {
    "allow": "Allowed",
    "block": "Blocked",
    "reset": "Reset to automatic",
    "wipe": "Wipe requested for",
    "remove": "Removed",
    "link": "Linked",
    "preapprove": "Pre-approved",
}


async def _change(
    request: web.Request, method: str, url: str, body: Mapping[str, Any], back: str
) -> tuple[Any, web.StreamResponse | None]:
    """Make the API call; on a refusal, the answer to send instead."""
    try:
        return await call_api(request, method, url, body=body), None
    except Exception as exc:
        error = api_error(exc, console_of(request).ctx)
        if error is None:
            raise
        return None, await _refused(request, error, back)


async def _refused(request: web.Request, error: ApiError, back: str) -> web.StreamResponse:
    if isinstance(error, Forbidden):
        message = f"{error.message}: this session is read-only."
        return await render(request, "error.html", status=403, title="Forbidden", message=message)
    session_of(request).flash("error", f"Refused ({error.status}): {explain(error)}")
    return redirect(back)


def _row_path(device_id: str, user: str) -> str:
    return f"/associations/{seg(device_id)}/{seg(user)}"


def _ended(answer: Mapping[str, Any]) -> str:
    ended = answer.get("polls_ended", 0)
    return f" ({ended} held poll{'s' if ended != 1 else ''} ended)" if ended else ""


async def _act(request: web.Request) -> web.StreamResponse:
    device_id, user = request.match_info["device_id"], request.match_info["user"]
    back = _row_path(device_id, user)
    asked = action_form(await form_fields(request))
    if asked.problem is not None:
        session_of(request).flash("error", asked.problem)
        return redirect(back)
    url = f"/api/associations/{seg(device_id)}/{seg(user)}/{asked.action}"
    answer, refused = await _change(request, "POST", url, asked.body, back)
    if refused is not None:
        return refused
    row = answer["association"]
    what = "Account-only wipe requested for" if asked.body.get("account_only") else None
    text = f"{what or _DONE[asked.action]} {device_id} / {user}{_ended(answer)}."
    session_of(request).flash("ok", text)
    return redirect("/" if row is None else _row_path(row["device_id"], row["user"]))


async def _preapprove(request: web.Request) -> web.StreamResponse:
    form = await form_fields(request)
    device_id, user = form.get("device_id", "").strip(), form.get("user", "").strip()
    if not device_id or not user:
        session_of(request).flash("error", "Pre-approve needs a DeviceId and a user.")
        return redirect("/")
    url = f"/api/associations/{seg(device_id)}/{seg(user)}/preapprove"
    answer, refused = await _change(request, "POST", url, {"note": form.get("note", "")}, "/")
    if refused is not None:
        return refused
    row = answer["association"]
    session_of(request).flash("ok", f"Pre-approved {row['device_id']} / {row['user']}.")
    return redirect(_row_path(row["device_id"], row["user"]))


def _list_url(form: Mapping[str, str]) -> str:
    """The association list with the filter the bulk form carried."""
    where = {
        k.removeprefix(FILTER_PREFIX): v
        for k, v in form.items()
        if k.startswith(FILTER_PREFIX) and v.strip()
    }
    return "/?" + urlencode(where) if where else "/"


@dataclass(frozen=True, slots=True)
class _Bulk:
    """A bulk call made: its form, what it asked, the API's answer."""

    form: dict[str, str]
    asked: ActionForm
    answer: Any


async def _bulk(request: web.Request, *, dry_run: bool) -> _Bulk | web.StreamResponse:
    form = await form_fields(request)
    asked = bulk_form(form, dry_run=dry_run)
    back = _list_url(form)
    if asked.problem is not None:
        session_of(request).flash("error", asked.problem)
        return redirect(back)
    url = f"/api/associations/actions/{asked.action}"
    answer, refused = await _change(request, "POST", url, asked.body, back)
    return refused or _Bulk(form, asked, answer)


async def _bulk_preview(request: web.Request) -> web.StreamResponse:
    run = await _bulk(request, dry_run=True)
    if not isinstance(run, _Bulk):
        return run
    answer = run.answer
    return await render(
        request,
        "bulk_preview.html",
        answer=answer,
        button=run.form.get("action", ""),
        hidden={k: v for k, v in run.form.items() if k not in ("csrf", "expect_changed")},
        where=run.asked.body.get("filter", {}),
        changed=answer["changed"][:PREVIEW_ROWS],
        skipped=answer["skipped"][:PREVIEW_ROWS],
        back=_list_url(run.form),
    )


async def _bulk_apply(request: web.Request) -> web.StreamResponse:
    run = await _bulk(request, dry_run=False)
    if not isinstance(run, _Bulk):
        return run
    answer, asked, form = run.answer, run.asked, run.form
    changed, skipped = len(answer["changed"]), len(answer["skipped"])
    text = f"{_DONE[asked.action]} {changed} row{'s' if changed != 1 else ''}"
    text += f", {skipped} skipped{_ended(answer)}."
    expected = form.get("expect_changed", "")
    if expected.isdigit() and int(expected) != changed:
        text += f" The preview listed {expected}: the list changed in between."
    session_of(request).flash("ok", text)
    return redirect(_list_url(form))


async def _save_preferences(request: web.Request) -> web.StreamResponse:
    form = await form_fields(request)
    current, refused = await _change(request, "GET", "/api/preferences", {}, "/preferences")
    if refused is not None:
        return refused
    route, _ = find_route("PUT", "/api/preferences")
    body = changed_preferences(form, current, route.body or {})
    if not body:
        session_of(request).flash("ok", "Nothing changed.")
        return redirect("/preferences")
    _, refused = await _change(request, "PUT", "/api/preferences", body, "/preferences")
    if refused is not None:
        return refused
    names = ", ".join(sorted(k for k in body if k != "note"))
    session_of(request).flash("ok", f"Saved: {names}.")
    return redirect("/preferences")


def _scope_url(scope: str) -> str | None:
    """The API route resetting ``scope``'s established backend type."""
    kind, _, name = scope.partition(":")
    if not name:
        return None
    base = {"device": "/api/devices", "eas": "/api/device-ids"}.get(kind)
    return None if base is None else f"{base}/{seg(name)}/reset-backend-type"


async def _reset_backend_type(request: web.Request) -> web.StreamResponse:
    form = await form_fields(request)
    back = local_next(form.get("back"))
    url = _scope_url(form.get("scope", ""))
    if url is None:
        session_of(request).flash("error", "Nothing to reset: no device scope given.")
        return redirect(back)
    body: dict[str, Any] = {"note": form.get("note", "")}
    if form.get("backend_type", "").strip():
        body["backend_type"] = form["backend_type"].strip()
    answer, refused = await _change(request, "POST", url, body, back)
    if refused is not None:
        return refused
    now = answer["established"]
    text = now["backend_type"] if now else "none until the next accepted mailbox"
    session_of(request).flash("ok", f"Backend type of {answer['scope']} reset: {text}.")
    return redirect(back)


async def _recover_store(request: web.Request) -> web.StreamResponse:
    form = await form_fields(request)
    body = {"note": form["note"]} if form.get("note", "").strip() else {}
    answer, refused = await _change(request, "POST", "/api/store/recover", body, "/pools")
    if refused is not None:
        return refused
    state = "healthy" if answer["healthy"] else f"still {answer['fault']}"
    session_of(request).flash("ok", f"State store recovered: {state}.")
    return redirect("/pools")


ROUTES = [
    web.post("/associations/{device_id}/{user}/act", _act),
    web.post("/reset-backend-type", _reset_backend_type),
    web.post("/store/recover", _recover_store),
    web.post("/preapprove", _preapprove),
    web.post("/bulk/preview", _bulk_preview),
    web.post("/bulk/apply", _bulk_apply),
    web.post("/preferences", _save_preferences),
]
