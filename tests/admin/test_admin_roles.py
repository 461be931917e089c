"""The read-only token: every route that changes nothing, never one that does.

The role rule is the API's (``api.check_role``), so it holds for the API and
for the web console alike (the console's own tests check it from there)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from admin_support import Api, device, folder_sync_status

from sentry.admin.api import ROUTES, find_route, invoke
from sentry.admin.auth import AdminTokens, Role
from sentry.admin.errors import Forbidden, NotFound
from sentry.testing.gateway import DEMO_ROUTING, demo_gateway, demo_pools


@pytest.fixture
async def gateway(tmp_path: Path):
    async with demo_gateway(
        tmp_path,
        demo_pools(),
        routing=DEMO_ROUTING,
        admin={"readonly_token_file": "secrets/readonly-token"},
    ) as gw:
        yield gw


@pytest.fixture
def reader(gateway, session) -> Api:
    token = (gateway.gateway.root / "secrets" / "readonly-token").read_text().strip()
    return Api(session, gateway.admin_url, token)


def _concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: "allow" if m[1] == "action" else "x", path)


def test_the_readonly_token_file_is_made_private(gateway):
    path = gateway.gateway.root / "secrets" / "readonly-token"
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_text().strip() != gateway.gateway.admin_token


async def test_the_readonly_token_reads_everything(gateway, reader, api):
    for path in ("/api/associations", "/api/users", "/api/devices", "/api/preferences",
                 "/api/pools", "/api/audit", "/api/labels", "/api/exchange-settings",
                 "/api/openapi.json", "/api/associations/export?format=json"):  # fmt: skip
        status, _ = await reader.get(path)
        assert status == 200, path


async def test_the_readonly_token_changes_nothing(gateway, session, reader, api):
    client = device(gateway, session, "alice", "PHONE1")
    await client.provision()
    key = "/api/associations/PHONE1/alice"
    status, answer = await reader.post(key + "/block", {"note": "no"})
    assert status == 403
    assert answer == {"error": "the read-only token cannot change anything"}
    assert (await api.ok("GET", key))["state"] == "allowed"
    assert await folder_sync_status(client) == "1"
    await api.ok("POST", key + "/block", {"note": "yes"})  # the admin token still can
    assert (await api.ok("GET", key))["state"] == "blocked"


async def test_every_changing_route_refuses_the_readonly_token_before_anything(gateway, reader):
    """Even a body that would be a 400 is a 403 first: the role is checked first."""
    changing = [r for r in ROUTES if r.changes or r.method != "GET"]
    assert changing
    for route in changing:
        status, _ = await reader.call(route.method, _concrete(route.path), {"bad": "body"})
        assert status == 403, (route.method, route.path)
    audit = await reader.get("/api/audit")
    assert audit[1]["total"] == 0


async def test_without_a_readonly_token_file_there_is_no_readonly_role(tmp_path, session):
    async with demo_gateway(tmp_path) as gw:
        assert gw.gateway.readonly_token is None
        assert not list(tmp_path.glob("*readonly*"))
        status, _ = await Api(session, gw.admin_url, "guess").get("/api/associations")
        assert status == 401


async def test_a_rotated_readonly_token_is_followed(gateway, session):
    from sentry.admin.token import write_token

    path = gateway.gateway.root / "secrets" / "readonly-token"
    old = path.read_text().strip()
    write_token(path, "new-readonly-token-0123456789abcdef")
    new = Api(session, gateway.admin_url, "new-readonly-token-0123456789abcdef")
    assert (await new.get("/api/associations"))[0] == 200
    assert (await Api(session, gateway.admin_url, old).get("/api/associations"))[0] == 401


def test_tokens_roles():
    tokens = AdminTokens("admin-secret", "reader-secret")
    assert tokens.role_of("admin-secret") is Role.ADMIN
    assert tokens.role_of("reader-secret") is Role.READ_ONLY
    assert tokens.role_of("") is None and tokens.role_of("x" * 5000) is None
    assert AdminTokens("admin-secret").role_of("reader-secret") is None
    assert tokens.generation(Role.ADMIN) != tokens.generation(Role.READ_ONLY)


def test_find_route_takes_the_most_specific_template():
    route, params = find_route("POST", "/api/associations/actions/block")
    assert route.path.startswith("/api/associations/actions/")
    route, params = find_route("GET", "/api/associations/AB%2FC/bob%40example.com")
    assert params == {"device_id": "AB/C", "user": "bob@example.com"}
    with pytest.raises(NotFound):
        find_route("GET", "/api/nothing")
    with pytest.raises(NotFound):
        find_route("PATCH", "/api/preferences")


async def test_invoke_applies_the_role_rule(gateway):
    assert gateway.gateway.admin_app is not None
    from sentry.admin.api import ADMIN_CONTEXT

    ctx = gateway.gateway.admin_app[ADMIN_CONTEXT]
    prefs = await invoke(ctx, "GET", "/api/preferences", actor="t", role=Role.READ_ONLY)
    assert "auto_block_unregistered" in prefs
    with pytest.raises(Forbidden):
        await invoke(ctx, "PUT", "/api/preferences", body={}, actor="t", role=Role.READ_ONLY)


def test_rotate_the_readonly_token(tmp_path: Path, monkeypatch, capsys):
    from sentry.admin.token import read_token, write_token
    from sentry.cli import main

    monkeypatch.chdir(tmp_path)
    config = "admin: {listen: {port: 1}, token_file: var/admin, readonly_token_file: var/ro}\n"
    (tmp_path / "sentry.yaml").write_text(config)
    write_token(tmp_path / "var" / "admin", "the-admin-token-0123456789")
    argv = ["admin", "token", "rotate", "--readonly", "--config", "sentry.yaml", "--url", "x:"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("new read-only token written to var/ro (mode 0600)")
    assert read_token(tmp_path / "var" / "ro")
    assert read_token(tmp_path / "var" / "admin") == "the-admin-token-0123456789"
    (tmp_path / "plain.yaml").write_text("admin: {token_file: var/admin}\n")
    assert main(["admin", "token", "rotate", "--readonly", "--config", "plain.yaml"]) == 2
    assert "admin.readonly_token_file is not set" in capsys.readouterr().err
