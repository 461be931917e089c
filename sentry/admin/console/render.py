"""Pages from templates: every value escaped, every answer with strict headers.

Approach. Jinja2 renders the package's templates with autoescaping on for
every template and ``StrictUndefined`` (a missing value is an error, not an
empty cell). Values reach a template only as data (the API's JSON answers),
so whatever a device sent (DeviceType, User-Agent, DeviceInformation) is
escaped as text; URLs are built with the ``seg`` filter (one percent-encoded
path segment) and ``qs`` (an encoded query string). Every console answer
carries ``SECURITY_HEADERS``: a Content-Security-Policy that allows no script
at all (the console has none), styles and images from itself only, forms
posting to itself only and no framing; no caching; no referrer to other sites
(``same-origin``: with ``no-referrer`` a browser sends ``Origin: null``, which
the guard refuses).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from aiohttp import web

from .state import SESSION

__all__ = ["CSP", "SECURITY_HEADERS", "environment", "redirect", "render"]

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def _seg(value: Any) -> str:
    return quote(str(value), safe="")


def _qs(values: Mapping[str, Any], **more: Any) -> str:
    merged = {**values, **more}
    return urlencode({k: v for k, v in merged.items() if v not in (None, "")})


def _when(value: Any) -> str:
    """``2026-12-03T13:22:08.123Z`` as ``2026-12-03 13:22:08``."""
    if not value:
        return "—"
    text = str(value)
    return text[:19].replace("T", " ") if len(text) >= 19 else text


def _compact(value: Any) -> str:
    if value is None:
        return ""
    return json.dumps(value, sort_keys=True, separators=(", ", ": "), default=str)


def _changes(before: Any, after: Any) -> str:
    """An audit entry's before -> after, only what differs (``state: none -> allowed``)."""
    if not isinstance(before, dict) or not isinstance(after, dict):
        return " → ".join(_compact(v) for v in (before, after) if v is not None)
    keys = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    parts = [f"{k}: {_compact(before.get(k))} → {_compact(after.get(k))}" for k in keys]
    return "; ".join(parts) or "(no difference)"


def _words(values: Any) -> str:
    if not values:
        return "—"
    return ", ".join(str(v) for v in values)


def environment() -> jinja2.Environment:
    """The template environment (autoescaping everywhere, strict undefined)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("sentry.admin.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        seg=_seg, qs=_qs, when=_when, compact=_compact, words=_words, changes=_changes
    )
    return env


_ENV = environment()


async def render(
    request: web.Request, template: str, *, status: int = 200, **values: Any
) -> web.Response:
    """``template`` rendered for ``request``'s session (its name, role, CSRF
    token and pending messages) with ``values``. The rendering runs in a
    worker thread: a page of 1,000 rows takes a few hundred milliseconds of
    template work that must not hold up the event loop (the device
    listener's)."""
    session = request.get(SESSION)
    context = {
        "session": session,
        "flashes": session.take_flashes() if session is not None else [],
        "path": request.path,
        **values,
    }
    page = await asyncio.to_thread(_ENV.get_template(template).render, context)
    return web.Response(
        text=page,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers=SECURITY_HEADERS,
    )


def redirect(location: str) -> web.Response:
    """303 See Other to a local ``location`` (after a form: the browser GETs it)."""
    return web.Response(status=303, headers={**SECURITY_HEADERS, "Location": location})
