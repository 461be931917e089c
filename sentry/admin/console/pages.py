"""The console's pages: each one GET of the admin API, rendered.

Approach. A page handler turns its URL and query string into one admin API
call (``state.call_api``), or a few for a detail view, and renders the JSON
answer with its template; it computes nothing the API does not say. The
association list is the API's list with its filters and paging: each page
is one store query of ``limit`` rows (``listing.list_page``), so 100,000
rows cost what 100 do. Filter controls are built from the list route's own
filter fields (``listing.FILTER_FIELDS``), so a filter added to the API
appears here with its choices. A refused read (a bad filter value, an
unknown row) shows the API's message with its status.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from aiohttp import web

from sentry.admin.actions import BULK_ACTIONS
from sentry.admin.api import api_error, find_route
from sentry.admin.errors import ApiError
from sentry.admin.listing import FILTER_FIELDS
from sentry.admin.schema import Fields

from .forms import PAGE_SIZES, list_query
from .render import render
from .state import call_api, console_of

__all__ = ["ROUTES", "explain", "filter_controls", "pager", "preference_controls", "seg"]

LABELS = {
    "user": "User",
    "device_id": "Device ID",
    "device_type": "Device type",
    "state": "State",
    "reason": "Reason",
    "linked": "Linked",
    "pool": "Pool",
    "verified": "Verified",
    "throwaway": "Throwaway",
    "never_seen": "Never seen",
}
"""Filter labels (a filter without one shows its API name)."""


def seg(value: str) -> str:
    """One URL path segment, percent-encoded."""
    return quote(value, safe="")


def explain(error: ApiError) -> str:
    """The API's refusal as one line: its message and each field's problem."""
    return error.message + "".join(f"; {k}: {v}" for k, v in error.fields.items())


def filter_controls(values: Mapping[str, str], fields: Fields = FILTER_FIELDS) -> list[Any]:
    """One form control per filter field: text, or a choice of its values."""
    controls = []
    for name, f in fields.items():
        choices: tuple[tuple[str, str], ...] = ()
        if f.kind == "boolean":
            choices = (("true", "yes"), ("false", "no"))
        elif f.choices:
            choices = tuple((c, c) for c in f.choices)
        controls.append(
            {
                "name": name,
                "label": LABELS.get(name, name),
                "doc": f.doc,
                "choices": choices,
                "value": values.get(name, ""),
            }
        )
    return controls


def pager(answer: Mapping[str, Any], query: Mapping[str, str]) -> dict[str, Any]:
    """First/previous/next/last offsets of a paged answer."""
    total, offset, limit = answer["total"], answer["offset"], answer["limit"]
    last = max(0, (total - 1) // limit * limit)
    return {
        "total": total,
        "first_row": offset + 1 if total else 0,
        "last_row": min(offset + limit, total),
        "prev": max(0, offset - limit) if offset > 0 else None,
        "next": offset + limit if offset + limit < total else None,
        "last": last if offset < last else None,
        "limit": limit,
        "sizes": PAGE_SIZES,
        "query": {k: v for k, v in query.items() if k not in ("offset",)},
    }


def _query(request: web.Request, url: str) -> dict[str, str]:
    """The request's query parameters that the API route ``GET url`` takes."""
    route, _ = find_route("GET", url)
    return list_query(request.query, route.query)


async def _read(
    request: web.Request, url: str, query: Mapping[str, str] | None = None
) -> tuple[Any, ApiError | None]:
    """The answer of ``GET url``, or the API's refusal."""
    try:
        return await call_api(request, "GET", url, query=query), None
    except Exception as exc:
        error = api_error(exc, console_of(request).ctx)
        if error is None:
            raise
        return None, error


async def _failed(request: web.Request, error: ApiError) -> web.Response:
    title = {400: "Bad request", 403: "Forbidden", 404: "Not found"}.get(error.status, "Error")
    return await render(
        request, "error.html", status=error.status, title=title, message=explain(error)
    )


async def _associations(request: web.Request) -> web.StreamResponse:
    query = _query(request, "/api/associations")
    answer, error = await _read(request, "/api/associations", query)
    if error is not None:
        empty = {"items": [], "total": 0, "offset": 0, "limit": 100}
        answer, status, message = empty, error.status, explain(error)
    else:
        status, message = 200, None
    filters = {k: v for k, v in query.items() if k in FILTER_FIELDS}
    return await render(
        request,
        "associations.html",
        status=status,
        page=answer,
        error=message,
        filters=filter_controls(filters),
        filter_values=filters,
        pager=pager(answer, query),
        bulk_actions=BULK_ACTIONS,
    )


async def _association(request: web.Request) -> web.StreamResponse:
    device_id, user = request.match_info["device_id"], request.match_info["user"]
    row, error = await _read(request, f"/api/associations/{seg(device_id)}/{seg(user)}")
    if error is not None:
        return await _failed(request, error)
    owned, _ = await _read(request, "/api/devices", {"owner": row["user"], "limit": "100"})
    candidates = [d["id"] for d in (owned or {"items": []})["items"] if not d["retired"]]
    return await render(
        request,
        "association.html",
        row=row,
        link_candidates=candidates,
        backend_types=await _backend_types(request),
    )


async def _backend_types(request: web.Request) -> list[str]:
    """The backend types of the configured pools (what a reset may set)."""
    pools, _ = await _read(request, "/api/pools")
    return sorted({p["type"] for p in (pools or {"items": []})["items"]})


async def _devices(request: web.Request) -> web.StreamResponse:
    query = _query(request, "/api/devices")
    answer, error = await _read(request, "/api/devices", query)
    if error is not None:
        return await _failed(request, error)
    return await render(
        request, "devices.html", page=answer, pager=pager(answer, query), owner=query.get("owner")
    )


async def _device(request: web.Request) -> web.StreamResponse:
    device, error = await _read(request, f"/api/devices/{seg(request.match_info['id'])}")
    if error is not None:
        return await _failed(request, error)
    types = await _backend_types(request)
    return await render(request, "device.html", device=device, backend_types=types)


async def _users(request: web.Request) -> web.StreamResponse:
    query = _query(request, "/api/users")
    answer, error = await _read(request, "/api/users", query)
    if error is not None:
        return await _failed(request, error)
    return await render(
        request, "users.html", page=answer, pager=pager(answer, query), q=query.get("q")
    )


async def _user(request: web.Request) -> web.StreamResponse:
    user, error = await _read(request, f"/api/users/{seg(request.match_info['principal'])}")
    if error is not None:
        return await _failed(request, error)
    return await render(request, "user.html", user=user)


async def _labels(request: web.Request) -> web.StreamResponse:
    labels, error = await _read(request, "/api/labels")
    if error is not None:
        return await _failed(request, error)
    settings, _ = await _read(request, "/api/exchange-settings")
    return await render(request, "labels.html", labels=labels["items"], settings=settings["items"])


async def _access_rules(request: web.Request) -> web.StreamResponse:
    rules, error = await _read(request, "/api/access-rules")
    if error is not None:
        return await _failed(request, error)
    quarantine, _ = await _read(request, "/api/quarantine", {"limit": "1"})
    count = "?" if quarantine is None else quarantine["total"]
    return await render(request, "access_rules.html", rules=rules["items"], quarantined=count)


async def _exchange_settings(request: web.Request) -> web.StreamResponse:
    settings, error = await _read(request, "/api/exchange-settings")
    if error is not None:
        return await _failed(request, error)
    return await render(request, "exchange_settings.html", settings=settings["items"])


async def _pools(request: web.Request) -> web.StreamResponse:
    pools, error = await _read(request, "/api/pools")
    if error is not None:
        return await _failed(request, error)
    redirects, _ = await _read(request, "/api/redirects")
    store, _ = await _read(request, "/api/store")
    return await render(request, "pools.html", pools=pools, redirects=redirects, store=store)


def preference_controls(answer: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One control per preference the API's PUT takes: its kind, value, source."""
    route, _ = find_route("PUT", "/api/preferences")
    controls = []
    for name, f in (route.body or {}).items():
        if name in ("note", "use_file"):
            continue
        choices: tuple[str, ...] = ("true", "false") if f.kind == "boolean" else f.choices
        value = answer.get(name)
        text = "" if value is None else str(value).lower() if f.kind == "boolean" else str(value)
        controls.append(
            {
                "name": name,
                "doc": f.doc,
                "kind": f.kind,
                "nullable": f.nullable,
                "minimum": f.minimum,
                "choices": choices,
                "value": text,
                "source": answer.get("sources", {}).get(name, "default"),
            }
        )
    return controls


async def _preferences(request: web.Request) -> web.StreamResponse:
    prefs, error = await _read(request, "/api/preferences")
    if error is not None:
        return await _failed(request, error)
    return await render(request, "preferences.html", controls=preference_controls(prefs))


_AUDIT_FILTERS = ("actor", "target", "since", "until")


async def _audit(request: web.Request) -> web.StreamResponse:
    query = _query(request, "/api/audit")
    answer, error = await _read(request, "/api/audit", query)
    message = None
    if error is not None:
        message = explain(error)
        answer = {"items": [], "total": 0, "offset": 0, "limit": 100}
    values = {k: query.get(k, "") for k in _AUDIT_FILTERS}
    return await render(
        request,
        "audit.html",
        status=200 if error is None else error.status,
        page=answer,
        pager=pager(answer, query),
        values=values,
        error=message,
    )


ROUTES = [
    web.get("/", _associations),
    web.get("/associations/{device_id}/{user}", _association),
    web.get("/devices", _devices),
    web.get("/devices/{id}", _device),
    web.get("/users", _users),
    web.get("/users/{principal}", _user),
    web.get("/labels", _labels),
    web.get("/exchange-settings", _exchange_settings),
    web.get("/access-rules", _access_rules),
    web.get("/pools", _pools),
    web.get("/preferences", _preferences),
    web.get("/audit", _audit),
]
