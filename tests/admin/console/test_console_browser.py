"""The console in a real browser (Playwright + Debian's Chromium).

Scenarios an administrator lives through: sign in, find a blocked
association, allow it with a note and see the device sync through the
gateway; run a bulk block with its preview; a read-only session; and the
attacks a browser makes possible: a forged form from another site, a wrong
CSRF token, script in device-controlled text. Skipped with the reason when
the browser is missing, failing instead under ``CI``/``SENTRY_REQUIRE_BROWSER``
(``browser_support``). Screenshots of the main pages go to ``var/screenshots``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from browser_support import chromium, require_browser, screenshot
from console_support import XSS, first_contact, phone, seed

from sentry.testing.demo_client import SyncRefused, sync_inbox
from sentry.testing.gateway import DemoGateway


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Any]:
    require_browser()
    async with chromium(tmp_path / "chromium-profile") as context:
        page = context.pages[0] if context.pages else await context.new_page()
        page.dialogs = []
        page.on("dialog", lambda d: page.dialogs.append(d.message))
        yield page


async def _api(gateway: DemoGateway, session, method: str, path: str, body=None):
    headers = {"Authorization": f"Bearer {gateway.gateway.admin_token}"}
    url = gateway.admin_url + path
    async with session.request(method, url, json=body, headers=headers) as r:
        assert r.status < 300, (path, r.status, await r.text())
        return await r.json()


async def _sign_in(page, gateway: DemoGateway, token: str, name: str) -> None:
    await page.goto(gateway.admin_url + "/")
    assert page.url.startswith(gateway.admin_url + "/signin")
    await page.fill("#name", name)
    await page.fill("#token", token)
    await page.click("button:text('Sign in')")
    await page.wait_for_url(gateway.admin_url + "/")


async def _no_script_runs(page, gateway: DemoGateway) -> None:
    """Script in device-controlled text (DeviceType, User-Agent, DeviceInformation
    of EVILPHONE4) is shown as text and never runs."""
    response = await page.goto(gateway.admin_url + "/associations/EVILPHONE4/shared")
    assert "script-src" not in response.headers["content-security-policy"]
    assert "default-src 'none'" in response.headers["content-security-policy"]
    text = await page.locator("main").inner_text()
    assert text.count(XSS) >= 3  # DeviceType, User-Agent, DeviceInformation: shown as text
    assert await page.locator("img[src='x']").count() == 0
    await page.goto(gateway.admin_url + "/")
    assert await page.locator("img[src='x']").count() == 0
    assert XSS in await page.locator("#associations").inner_text()
    assert page.dialogs == []


async def test_allow_a_blocked_device_and_it_syncs(gateway, session, browser):
    page = browser
    await seed(gateway, session)
    alice = phone(gateway, session, "alice", "ALICEPHONE1")
    assert not await first_contact(alice)  # auto-blocked

    await page.goto(gateway.admin_url + "/pools")  # any page: sign in first
    assert "/signin" in page.url
    await screenshot(page, "signin")
    await page.fill("#name", "Ada Admin")
    await page.fill("#token", gateway.gateway.admin_token)
    await page.click("button:text('Sign in')")
    await page.wait_for_url(gateway.admin_url + "/pools")
    await page.click("nav >> text=Associations")

    # find it: blocked rows of alice
    await page.fill("input[name=user]", "alice")
    await page.select_option("select[name=state]", "blocked")
    await page.click("form.filters button")
    await page.wait_for_url(re.compile(r".*state=blocked.*"))
    rows = page.locator("#associations tbody tr")
    assert await rows.count() == 2
    await page.click("#associations a:text('ALICEPHONE1')")
    await page.wait_for_url(re.compile(r".*/associations/ALICEPHONE1/alice$"))
    assert await page.locator("h1 .state").inner_text() == "blocked"
    assert "AUTO_BLOCK" in await page.locator("main").inner_text()
    await screenshot(page, "association")

    # a note is required: the browser will not send the form without one
    await page.click("#actions button[value=allow]")
    assert (await _api(gateway, session, "GET", "/api/associations/ALICEPHONE1/alice"))[
        "state"
    ] == "blocked"
    await page.fill("#actions input[name=note]", "ticket 4711: new phone, checked")
    await page.click("#actions button[value=allow]")
    await page.wait_for_selector(".flash-ok")
    assert "Allowed ALICEPHONE1 / alice." in await page.locator(".flash-ok").inner_text()
    assert await page.locator("h1 .state").inner_text() == "allowed"

    # the device syncs through the gateway now
    await alice.provision()
    subjects = await sync_inbox(alice)
    assert subjects  # the demo backend's Inbox, through the gateway

    row = await _api(gateway, session, "GET", "/api/associations/ALICEPHONE1/alice")
    assert row["override"]["note"] == "ticket 4711: new phone, checked"
    assert row["override"]["actor"] == "Ada Admin"

    await _no_script_runs(page, gateway)
    await page.goto(gateway.admin_url + "/")
    await screenshot(page, "associations")
    for name in ("devices", "users", "pools", "preferences", "audit"):
        await page.click(f"nav a[href='/{name}']")
        await page.wait_for_url(gateway.admin_url + f"/{name}")
        await screenshot(page, name)
    assert "ticket 4711" in await page.locator("#audit").inner_text()
    assert page.dialogs == []


async def test_bulk_block_with_a_preview(gateway, session, browser):
    page = browser
    await seed(gateway, session)
    body = {"filter": {"user": "alice"}, "note": "setup"}
    await _api(gateway, session, "POST", "/api/associations/actions/allow", body)
    alice = phone(gateway, session, "alice", "ALICETAB3", "iPad")
    await alice.provision()
    await sync_inbox(alice)

    await _sign_in(page, gateway, gateway.gateway.admin_token, "Ada Admin")
    await page.goto(gateway.admin_url + "/?user=alice&state=allowed")
    assert await page.locator("#associations tbody tr").count() == 2
    await page.select_option("#bulk select[name=action]", "block")
    await page.fill("#bulk input[name=note]", "alice left the company")
    await page.click("#bulk button:text('Preview')")
    await page.wait_for_url(gateway.admin_url + "/bulk/preview")
    summary = await page.locator("#preview-summary").inner_text()
    assert "2 would change" in summary and "Nothing has changed yet." in summary
    listed = await page.locator("#would-change tbody").inner_text()
    assert "ALICEPHONE1" in listed and "ALICETAB3" in listed and "BOBPHONE2" not in listed
    await screenshot(page, "bulk-preview")
    states = await _api(gateway, session, "GET", "/api/associations?user=alice")
    assert {r["state"] for r in states["items"]} == {"allowed"}  # the preview changed nothing

    await page.click("#confirm button")
    await page.wait_for_selector(".flash-ok")
    assert "Blocked 2 rows, 0 skipped." in await page.locator(".flash-ok").inner_text()
    states = await _api(gateway, session, "GET", "/api/associations?user=alice")
    assert {r["state"] for r in states["items"]} == {"blocked"}
    with pytest.raises(SyncRefused):
        await sync_inbox(alice)  # refused by the gateway from now on
    bob = await _api(gateway, session, "GET", "/api/associations/BOBPHONE2/bob")
    assert bob["state"] == "blocked" and bob["override"] is None  # untouched (auto-block)


@dataclass
class Attacker:
    """Another site's server and where its form points."""

    port: int
    target: dict[str, str]


@pytest.fixture
async def attacker() -> AsyncIterator[Attacker]:
    """Another site (``localhost`` is another site than ``127.0.0.1``) whose
    page holds a form aimed at the console; its URL is set per test."""
    target: dict[str, str] = {}

    async def evil(_request: web.Request) -> web.Response:
        form = (
            f'<form method="post" action="{target["url"]}">'
            '<input name="action" value="allow"><input name="note" value="pwned">'
            '<input name="csrf" value="guess"><button id="go">win a prize</button></form>'
        )
        return web.Response(text=f"<html><body>{form}</body></html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/", evil)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(site.name.rsplit(":", 1)[1])
    try:
        yield Attacker(port, target)
    finally:
        await runner.cleanup()


async def test_forged_changes_are_refused(gateway, session, browser, attacker):
    """A wrong CSRF token in the console's own form, and a form from another
    site (``localhost``) aimed at the console: both 403, nothing changed."""
    page = browser
    await seed(gateway, session)
    await _sign_in(page, gateway, gateway.gateway.admin_token, "Ada Admin")
    await page.goto(gateway.admin_url + "/associations/ALICEPHONE1/alice")
    await page.locator("#actions input[name=csrf]").evaluate("e => e.value = 'forged'")
    await page.fill("#actions input[name=note]", "should not happen")
    async with page.expect_navigation() as nav:
        await page.click("#actions button[value=allow]")
    assert (await nav.value).status == 403
    assert "CSRF token is missing or wrong" in await page.locator("main").inner_text()

    attacker.target["url"] = gateway.admin_url + "/associations/ALICEPHONE1/alice/act"
    await page.goto(f"http://localhost:{attacker.port}/")
    async with page.expect_navigation() as nav:
        await page.click("#go")
    assert (await nav.value).status == 403
    assert "another site" in await page.locator("main").inner_text()
    row = await _api(gateway, session, "GET", "/api/associations/ALICEPHONE1/alice")
    assert row["state"] == "blocked" and row["override"] is None
    audit = await _api(gateway, session, "GET", "/api/audit")
    assert audit["total"] == 0


async def test_a_read_only_session_sees_but_cannot_act(gateway, session, browser):
    page = browser
    await seed(gateway, session)
    readonly = (gateway.gateway.root / "readonly-token").read_text().strip()
    await _sign_in(page, gateway, readonly, "Rita Reader")
    assert await page.locator(".role").inner_text() == "read-only"
    assert await page.locator("#associations tbody tr").count() == 4
    assert await page.locator("#bulk").count() == 0
    await page.click("#associations a:text('ALICEPHONE1')")
    await page.wait_for_url(re.compile(r".*/associations/ALICEPHONE1/alice$"))
    assert await page.locator("#actions").count() == 0
    assert "DeviceInformation" in await page.locator("main").inner_text()
    await page.goto(gateway.admin_url + "/preferences")
    assert await page.locator("#preferences button").count() == 0
    await page.click("button:text('Sign out')")
    await page.wait_for_url(re.compile(r".*/signin$"))
    await page.goto(gateway.admin_url + "/")
    assert "/signin" in page.url
