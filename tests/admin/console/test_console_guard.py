"""The console's gate over HTTP: no change without the session cookie, the
session's CSRF token and a same-site origin; strict headers on every answer;
the read-only role refused by the API rule for the console and the API alike."""

from __future__ import annotations

import re

import aiohttp
import pytest
from console_support import seed
from structlog.testing import capture_logs

from sentry.admin.console.render import CSP
from sentry.testing.console import ConsoleClient, console_session

ROW = "/associations/ALICEPHONE1/alice"
EVENT_ATTRIBUTE = re.compile(r"<[^>]*\son[a-z]+\s*=", re.IGNORECASE)
ALLOW = {"action": "allow", "note": "ticket 17"}


async def _state(gateway, session: aiohttp.ClientSession) -> str:
    """The row's state as the API (bearer token) reports it."""
    headers = {"Authorization": f"Bearer {gateway.gateway.admin_token}"}
    url = f"{gateway.admin_url}/api{ROW}"
    async with session.get(url, headers=headers) as r:
        assert r.status == 200
        return (await r.json())["state"]


@pytest.fixture
async def seeded(gateway, session):
    await seed(gateway, session)
    return gateway


async def test_a_change_with_the_right_token_goes_through(seeded, session, console):
    await console.get(ROW)
    page = await console.post(ROW + "/act", ALLOW)
    assert page.status == 303 and page.location == ROW
    assert await _state(seeded, session) == "allowed"
    shown = await console.get(ROW)
    assert "Allowed ALICEPHONE1 / alice." in shown.text


async def test_a_change_without_the_session_cookie_is_refused(seeded, session, console):
    token = console.csrf
    async with console_session() as stranger:  # no cookie at all
        page = await ConsoleClient(stranger, seeded.admin_url).post(ROW + "/act", ALLOW, csrf=token)
    assert page.status == 403
    assert "Sign in first" in page.text
    assert await _state(seeded, session) == "blocked"


@pytest.mark.parametrize("csrf", [None, "", "wrong-token", "x" * 43])
async def test_a_change_with_a_missing_or_wrong_csrf_token_is_refused(
    seeded, session, console, csrf
):
    await console.get(ROW)
    with capture_logs() as logs:
        page = await console.post(ROW + "/act", ALLOW, csrf=csrf)
    assert page.status == 403
    assert "CSRF token is missing or wrong" in page.text
    assert await _state(seeded, session) == "blocked"
    assert any(e["event"] == "console_refused" and e["reason"] == "csrf" for e in logs)


async def test_the_csrf_token_of_another_session_is_refused(seeded, session, console):
    async with console_session() as jar:
        other = ConsoleClient(jar, seeded.admin_url)
        await other.sign_in(seeded.gateway.admin_token, "Other")
        page = await console.post(ROW + "/act", ALLOW, csrf=other.csrf)
    assert page.status == 403
    assert await _state(seeded, session) == "blocked"


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
async def test_a_change_from_another_site_is_refused(seeded, session, console, headers):
    await console.get(ROW)
    page = await console.post(ROW + "/act", ALLOW, headers=headers)
    assert page.status == 403
    assert "another site" in page.text
    assert await _state(seeded, session) == "blocked"


async def test_a_same_origin_change_with_fetch_metadata_goes_through(seeded, session, console):
    await console.get(ROW)
    origin = seeded.admin_url
    headers = {"Origin": origin, "Sec-Fetch-Site": "same-origin"}
    page = await console.post(ROW + "/act", ALLOW, headers=headers)
    assert page.status == 303
    assert await _state(seeded, session) == "allowed"


async def test_every_answer_carries_the_strict_headers(seeded, console, browser_session):
    for path in ("/", ROW, "/pools", "/static/console.css", "/no-such-page"):
        page = await console.get(path)
        assert page.headers["Content-Security-Policy"] == CSP, path
        assert page.headers["X-Frame-Options"] == "DENY"
        assert page.headers["X-Content-Type-Options"] == "nosniff"
        assert page.headers["Cache-Control"] == "no-store"
    assert "script-src" not in CSP and "default-src 'none'" in CSP
    refused = await console.post(ROW + "/act", ALLOW, csrf="bad")
    assert refused.headers["Content-Security-Policy"] == CSP
    anonymous = await ConsoleClient(browser_session, seeded.admin_url).get("/signin")
    assert anonymous.headers["Content-Security-Policy"] == CSP


async def test_no_page_has_a_script(seeded, console):
    for path in ("/", ROW, "/devices", "/users", "/labels", "/preferences", "/audit", "/pools",
                 "/access-rules"):  # fmt: skip
        page = await console.get(path)
        assert page.status == 200, path
        assert "<script" not in page.text.lower(), path
        assert EVENT_ATTRIBUTE.search(page.text) is None, path


async def test_a_read_only_session_cannot_change_anything(seeded, session, browser_session):
    readonly = (seeded.gateway.root / "readonly-token").read_text().strip()
    reader = ConsoleClient(browser_session, seeded.admin_url)
    await reader.sign_in(readonly, "Rita Reader")
    row = await reader.get(ROW)
    assert row.status == 200 and 'value="allow"' not in row.text
    page = await reader.post(ROW + "/act", ALLOW)  # a valid CSRF token of its own session
    assert page.status == 403
    assert "read-only" in page.text
    assert await _state(seeded, session) == "blocked"
    for path, fields in (
        ("/bulk/preview", {"action": "block", "note": "n", "all": "true"}),
        ("/bulk/apply", {"action": "block", "note": "n", "all": "true"}),
        ("/preferences", {"auto_block_unregistered": "false", "note": "n"}),
        ("/preapprove", {"device_id": "NEWPHONE", "user": "bob", "note": "n"}),
        ("/reset-backend-type", {"scope": "eas:ALICEPHONE1", "note": "n"}),
        ("/store/recover", {"note": "n"}),
    ):
        assert (await reader.post(path, fields)).status == 403, path
    assert await _state(seeded, session) == "blocked"
