"""Sign-in, sessions and sign-out of the console, over HTTP against a real gateway."""

from __future__ import annotations

from pathlib import Path

from structlog.testing import capture_logs
from yarl import URL

from sentry.admin.console.state import CONSOLE
from sentry.admin.token import write_token
from sentry.testing.console import ConsoleClient, console_session, hidden_value
from sentry.testing.gateway import DemoGateway, demo_gateway


async def test_a_page_without_a_session_leads_to_the_signin_form(gateway, browser_session):
    client = ConsoleClient(browser_session, gateway.admin_url)
    page = await client.get("/devices", owner="alice")
    assert page.status == 303
    assert page.location == "/signin?next=%2Fdevices%3Fowner%3Dalice"
    form = await client.get("/signin", next="/devices?owner=alice")
    assert form.status == 200
    assert hidden_value(form.text, "next") == "/devices?owner=alice"
    assert 'name="token" type="password"' in form.text


async def test_signin_with_the_admin_token_opens_a_session(gateway: DemoGateway, browser_session):
    client = ConsoleClient(browser_session, gateway.admin_url)
    with capture_logs() as logs:
        page = await client.sign_in(gateway.gateway.admin_token, "Ada Admin")
    assert page.status == 303 and page.location == "/"
    cookie = page.headers["Set-Cookie"]
    assert cookie.startswith("sentry_console=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # the admin listener serves plain HTTP here
    home = await client.get("/")
    assert home.status == 200
    assert "Ada Admin" in home.text and "ActiveSync associations" in home.text
    event = next(e for e in logs if e["event"] == "console_signin")
    assert event["actor"] == "Ada Admin" and event["role"] == "admin"
    assert gateway.gateway.admin_token not in repr(logs)


async def test_a_wrong_token_is_refused_and_logged_without_the_token(gateway, browser_session):
    client = ConsoleClient(browser_session, gateway.admin_url)
    with capture_logs() as logs:
        page = await client.sign_in("not-the-token-" + "x" * 30, "Mallory")
    assert page.status == 401
    assert "Wrong token." in page.text
    assert "Set-Cookie" not in page.headers or "sentry_console=" not in page.headers["Set-Cookie"]
    assert (await client.get("/")).status == 303
    refused = [e for e in logs if e["event"] == "console_signin_refused"]
    assert refused and "not-the-token" not in repr(logs)


async def test_signin_needs_a_name(gateway, browser_session):
    client = ConsoleClient(browser_session, gateway.admin_url)
    page = await client.sign_in(gateway.gateway.admin_token, "   ")
    assert page.status == 400
    assert "Give your name" in page.text


async def test_signin_form_needs_its_own_one_time_value(gateway, browser_session):
    """Login CSRF: a sign-in posted without the form's cookie and value is refused."""
    client = ConsoleClient(browser_session, gateway.admin_url)
    fields = {"token": gateway.gateway.admin_token, "name": "x", "nonce": "forged", "next": "/"}
    page = await client.post("/signin", fields, csrf=False)
    assert page.status == 403
    assert (await client.get("/")).status == 303


async def test_next_only_leads_to_a_console_path(gateway, browser_session):
    client = ConsoleClient(browser_session, gateway.admin_url)
    form = await client.get("/signin", next="https://evil.example/")
    nonce = hidden_value(form.text, "nonce") or ""
    fields = {"token": gateway.gateway.admin_token, "name": "Ada", "nonce": nonce}
    page = await client.post("/signin", {**fields, "next": "//evil.example/x"}, csrf=False)
    assert page.status == 303 and page.location == "/"


async def test_signout_ends_the_session_on_the_server(gateway, console: ConsoleClient):
    cookie = console.session.cookie_jar.filter_cookies(URL(console.base))["sentry_console"].value
    page = await console.post("/signout", {})
    assert page.status == 303 and page.location == "/signin"
    assert "sentry_console=" in page.headers["Set-Cookie"]
    # a copy of the old cookie is worth nothing now
    async with console_session() as thief:
        thief.cookie_jar.update_cookies({"sentry_console": cookie}, URL(console.base))
        stolen = ConsoleClient(thief, console.base)
        assert (await stolen.get("/")).status == 303
        assert (await stolen.post("/signout", {}, csrf=console.csrf)).status == 403


async def test_rotating_the_token_ends_the_sessions_signed_in_with_it(gateway, console):
    assert (await console.get("/")).status == 200
    write_token(gateway.gateway.root / "admin-token", "a-brand-new-admin-token-0123456789")
    assert (await console.get("/")).status == 303


async def test_sessions_expire_after_idle_time(tmp_path: Path, browser_session):
    clock = [1000.0]
    async with demo_gateway(tmp_path, admin={"console": {"session_idle_seconds": 60}}) as gw:
        assert gw.gateway.admin_app is not None
        gw.gateway.admin_app[CONSOLE].clock = lambda: clock[0]
        client = ConsoleClient(browser_session, gw.admin_url)
        await client.sign_in(gw.gateway.admin_token)
        clock[0] += 59
        assert (await client.get("/")).status == 200
        clock[0] += 59
        assert (await client.get("/")).status == 200  # used: the idle time starts again
        clock[0] += 61
        assert (await client.get("/")).status == 303


async def test_the_readonly_token_signs_in_as_read_only(gateway, browser_session):
    client = ConsoleClient(browser_session, gateway.admin_url)
    readonly = (gateway.gateway.root / "readonly-token").read_text().strip()
    page = await client.sign_in(readonly, "Rita Reader")
    assert page.status == 303
    home = await client.get("/")
    assert home.status == 200
    assert "read-only" in home.text
    assert 'action="/bulk/preview"' not in home.text  # no form it could not use


async def test_the_console_can_be_switched_off(tmp_path: Path, browser_session):
    async with demo_gateway(tmp_path, admin={"console": {"enabled": False}}) as gw:
        client = ConsoleClient(browser_session, gw.admin_url)
        assert (await client.get("/")).status == 404
        assert (await client.get("/signin")).status == 404
        async with browser_session.get(gw.admin_url + "/healthz") as r:
            assert r.status == 200


async def test_under_admin_tls_the_cookie_is_secure_and_host_bound(tmp_path: Path):
    async with (
        demo_gateway(tmp_path, admin={"tls": {"enabled": True}}) as gw,
        console_session() as jar,
    ):
        assert gw.admin_url.startswith("https://")
        client = ConsoleClient(jar, gw.admin_url)
        form = await client.get("/signin")
        assert form.headers["Set-Cookie"].startswith("__Host-sentry_signin=")
        page = await client.sign_in(gw.gateway.admin_token, "Ada")
        cookie = page.headers["Set-Cookie"]
        assert cookie.startswith("__Host-sentry_console=")
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert (await client.get("/")).status == 200
        origin = {"Origin": gw.admin_url}
        assert (await client.post("/signout", {}, headers=origin)).status == 303
        assert (await client.get("/")).status == 303


async def test_the_session_cookie_never_opens_the_api(gateway, console: ConsoleClient):
    page = await console.get("/api/associations")
    assert page.status == 401
    assert "Bearer" in page.headers["WWW-Authenticate"]
