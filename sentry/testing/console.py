"""An HTTP client of the admin web console, for tests and bench/.

``ConsoleClient`` signs in as a browser does (GET the form for its one-time
value and cookie, POST it), keeps the session cookie in its own cookie jar
(``unsafe=True``: the admin listener is on an IP address), reads the CSRF
token from the pages it gets and sends it with every form, unless a test
asks it not to or to send another one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html import unescape
from typing import Any

import aiohttp

__all__ = ["ConsoleClient", "Page", "console_session", "hidden_value"]

_HIDDEN = re.compile(r'<input type="hidden" name="(?P<name>[^"]+)" value="(?P<value>[^"]*)">')


def hidden_value(html: str, name: str) -> str | None:
    """The value of the first hidden input called ``name`` in ``html``."""
    for m in _HIDDEN.finditer(html):
        if unescape(m["name"]) == name:
            return unescape(m["value"])
    return None


def console_session() -> aiohttp.ClientSession:
    """A client session with its own cookie jar that keeps IP-address cookies."""
    connector = aiohttp.TCPConnector(ssl=False)
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.CookieJar(unsafe=True))


@dataclass
class Page:
    """One answer of the console."""

    status: int
    text: str
    headers: dict[str, str]

    @property
    def location(self) -> str | None:
        return self.headers.get("Location")


class ConsoleClient:
    """A signed-in (or not yet) browser of the console at ``base``."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base.rstrip("/")
        self.csrf: str | None = None

    async def get(self, path: str, **params: str) -> Page:
        """GET ``path`` (redirects not followed); remembers the page's CSRF token."""
        return await self._send("GET", path, params=params or None)

    async def post(
        self, path: str, fields: dict[str, str], *, csrf: str | bool | None = True, **kw: Any
    ) -> Page:
        """POST a form; ``csrf=True`` adds the token last seen, a string sends
        that one, False/None sends none."""
        data = dict(fields)
        token = self.csrf if csrf is True else csrf if isinstance(csrf, str) else None
        if token is not None:
            data["csrf"] = token
        return await self._send("POST", path, data=data, **kw)

    async def sign_in(self, token: str, name: str = "tester") -> Page:
        """Sign in with ``token`` as ``name``; the answer to the form's POST."""
        form = await self.get("/signin")
        nonce = hidden_value(form.text, "nonce") or ""
        page = await self.post(
            "/signin", {"token": token, "name": name, "nonce": nonce, "next": "/"}, csrf=False
        )
        if page.status == 303:
            await self.get("/")
        return page

    async def _send(self, method: str, path: str, **kw: Any) -> Page:
        url = self.base + path
        async with self.session.request(method, url, allow_redirects=False, **kw) as resp:
            page = Page(resp.status, await resp.text(), dict(resp.headers))
        token = hidden_value(page.text, "csrf")
        if token:
            self.csrf = token
        return page
