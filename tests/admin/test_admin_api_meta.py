"""Authentication, error answers, preferences, pools, the audit log and the OpenAPI
document: every served route is documented, every documented route is served,
real answers match the documented schemas, and every change is audited."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import aiohttp
import pytest
from admin_support import Api, device, folder_sync_status, held_ping

from sentry.admin import auth
from sentry.admin.api import ROUTES
from sentry.policy.prefs import PREFERENCE_NAMES
from sentry.proxy.redirects import Mailbox, Target
from sentry.testing.gateway import DemoGateway

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def test_api_needs_the_bearer_token(
    api: Api, session: aiohttp.ClientSession, gateway: DemoGateway
) -> None:
    for token, error in ((None, "authentication required"), ("wrong", "invalid token")):
        for path in ("/api/associations", "/api/openapi.json", "/api/nowhere", "/api"):
            status, body = await api.get(path, token=token)
            assert status == 401, (token, path)
            assert api.last_headers["WWW-Authenticate"].startswith("Bearer")
            assert body["error"].startswith(error)
    status, _ = await api.get(
        "/api/users", headers={"Authorization": f"Basic {api.token}"}, token=None
    )
    assert status == 401
    await gateway.wait_ready()  # /readyz answers 200 once the pools passed a first check
    for path in ("/healthz", "/readyz", "/metrics"):  # open for probes and scrapers
        async with session.get(api.base + path) as resp:
            assert resp.status == 200, path


async def test_token_is_compared_in_constant_time(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[bytes, bytes]] = []
    real = auth.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    assert (await api.get("/api/preferences"))[0] == 200
    assert seen == [(api.token.encode(), api.token.encode())]


async def test_unknown_routes_and_methods_answer_json(api: Api) -> None:
    status, body = await api.get("/api/nowhere")
    assert (status, body) == (404, {"error": "Not Found"})
    status, body = await api.call("PATCH", "/api/preferences")
    assert status == 405 and body == {"error": "Method Not Allowed"}
    assert "PUT" in api.last_headers["Allow"]


async def test_preferences_take_effect_at_once(
    api: Api, gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    prefs = await api.ok("GET", "/api/preferences")
    assert prefs == {
        "auto_block_unregistered": False,
        "max_devices_per_mailbox": None,
        "max_mailboxes_per_device": None,
        "refusal_style": "status",
        "new_device_access_when_registry_unreachable": "allow",
        "compliance_overrides_allow": False,
        "sources": dict.fromkeys(PREFERENCE_NAMES, "default"),
    }
    _, ping = await held_ping(gateway, session, "alice", "PREFDEV1")
    body = {"auto_block_unregistered": True, "max_devices_per_mailbox": 3, "note": "lockdown"}
    changed = await api.ok("PUT", "/api/preferences", body)
    assert changed == prefs | {
        "auto_block_unregistered": True,
        "max_devices_per_mailbox": 3,
        "sources": prefs["sources"]
        | {"auto_block_unregistered": "admin", "max_devices_per_mailbox": "admin"},
    }
    r = await asyncio.wait_for(ping, 30)  # the unlinked row's held Ping ends (900 s heartbeat)
    assert r.text("Status") == "129"
    assert await folder_sync_status(device(gateway, session, "bob", "PREFDEV2")) == "129"
    row = await api.ok("GET", "/api/associations/PREFDEV2/bob")
    assert row["reasons"] == ["AUTO_BLOCK"]
    await api.ok("PUT", "/api/preferences", {"max_devices_per_mailbox": None})
    assert (await api.ok("GET", "/api/preferences"))["max_devices_per_mailbox"] is None
    status, body = await api.put(
        "/api/preferences", {"max_mailboxes_per_device": 0, "refusal_style": "loud", "x": 1}
    )
    assert status == 400
    assert body["fields"] == {
        "max_mailboxes_per_device": "must be at least 1",
        "refusal_style": "must be one of: status, http403",
        "x": "unknown field",
    }


async def test_pools_show_servers_health_and_routing(api: Api, gateway: DemoGateway) -> None:
    await gateway.wait_ready()
    pools = await api.ok("GET", "/api/pools")
    assert [(p["name"], p["type"], p["healthy"], p["ready"]) for p in pools["items"]] == [
        ("exchange", "exchange", 1, True),
        ("gmail", "gmail", 1, True),
    ]
    server = pools["items"][0]["servers"][0]
    assert ISO.match(server.pop("since")) and ISO.match(server.pop("last_check"))
    assert server == {
        "url": gateway.backend("exchange").url,
        "state": "up",
        "healthy": True,
        "failures": 0,
        "reason": None,
        "detail": None,
    }
    assert pools["routing"] == {"default": "exchange", "domains": {}, "users": {"carol": "gmail"}}


async def test_audit_is_paged_newest_first_with_actor(api: Api) -> None:
    for name in ("u1", "u2", "u3"):
        await api.put(f"/api/users/{name}", {"note": name}, headers={"X-Sentry-Actor": "jane"})
    page = await api.ok("GET", "/api/audit?offset=1&limit=1")
    assert (page["total"], page["offset"], page["limit"]) == (3, 1, 1)
    entry = page["items"][0]
    assert (entry["actor"], entry["action"], entry["target"], entry["note"]) == (
        "jane",
        "upsert_user",
        "user:u2",
        "u2",
    )
    assert entry["before"] is None and entry["after"]["principal"] == "u2"
    assert re.match(r"^\d{4}-.*Z$", entry["at"])
    status, body = await api.get("/api/audit?limit=5000")
    assert (status, body["fields"]) == (400, {"limit": "must be at most 1000"})


# --- The OpenAPI document against the served routes and real answers ---


def served_routes(gw: DemoGateway) -> set[tuple[str, str]]:
    app = gw.gateway.admin_app
    assert app is not None
    out = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if auth.is_api_path(path) and route.method not in ("HEAD", "*"):  # "*": the 405s
            out.add((route.method, path))
    return out


async def test_openapi_documents_exactly_the_served_routes(api: Api, gateway: DemoGateway) -> None:
    doc = await api.ok("GET", "/api/openapi.json")
    assert doc["openapi"].startswith("3.") and doc["info"]["title"]
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert documented == served_routes(gateway)
    assert documented == {(r.method, r.path) for r in ROUTES}
    for path, ops in doc["paths"].items():
        names = re.findall(r"\{(\w+)\}", path)
        for op in ops.values():
            params = [p["name"] for p in op["parameters"] if p["in"] == "path"]
            assert params == names, path
            assert "401" in op["responses"]
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    for ref in re.findall(r'"\$ref": "#/components/schemas/(\w+)"', _text(doc)):
        assert ref in doc["components"]["schemas"], ref


def _text(doc: Any) -> str:
    import json

    return json.dumps(doc)


def conforms(value: Any, schema: dict[str, Any], doc: dict[str, Any], where: str = "$") -> None:
    """A small JSON-schema check: $ref, allOf, type, nullable, enum, required, properties."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return conforms(value, doc["components"]["schemas"][name], doc, where)
    if value is None:
        assert schema.get("nullable") or not schema, f"{where}: null"
        return None
    for part in schema.get("allOf", ()):
        conforms(value, part, doc, where)
    kinds: dict[str, Any] = {"object": dict, "array": list, "string": str, "boolean": bool}
    kinds |= {"integer": int, "number": (int, float)}
    if "type" in schema:
        assert isinstance(value, kinds[schema["type"]]), f"{where}: not {schema['type']}"
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in enum"
    if isinstance(value, dict):
        missing = set(schema.get("required", ())) - value.keys()
        assert not missing, f"{where}: missing {missing}"
        props = schema.get("properties")
        if props is not None and "required" in schema:
            assert set(value) <= set(props), f"{where}: undocumented {set(value) - set(props)}"
        for key, sub in (props or {}).items():
            if key in value:
                conforms(value[key], sub, doc, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            conforms(item, schema["items"], doc, f"{where}[{i}]")
    return None


def operation(doc: dict[str, Any], method: str, path: str) -> tuple[str, dict[str, Any]]:
    bare = path.split("?")[0]
    for template, ops in sorted(doc["paths"].items(), key=lambda kv: kv[0].count("{")):
        pattern = "^" + re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, bare) and method.lower() in ops:
            return template, ops[method.lower()]
    raise AssertionError(f"undocumented: {method} {path}")


NEEDS_A_DIRECTORY = {("POST", "/api/directory/sync")}
"""Changing routes this gateway (no directory.ldap) cannot carry out: covered against a
real slapd in tests/directory/test_directory_api.py."""


async def test_answers_match_the_documented_schemas_and_every_change_is_audited(
    api: Api, gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    doc = await api.ok("GET", "/api/openapi.json")
    await device(gateway, session, "alice", "DOCDEV1").provision()
    await device(gateway, session, "bob", "DOCDEV2").provision()
    calls: list[tuple[str, str, Any]] = [
        ("PUT", "/api/users/alice", {"email": "alice@example.com", "custom1": "shared"}),
        ("PUT", "/api/users/zed", {}),
        ("DELETE", "/api/users/zed", {"note": "gone"}),
        ("POST", "/api/devices", {"id": "d1", "owner": "alice", "eas_device_ids": ["DOCDEV1"]}),
        ("PUT", "/api/exchange-settings/s1", {"user_name": "$USER_CUSTOM1$", "email": "$EMAIL$"}),
        ("PUT", "/api/exchange-settings/s2", {"user_name": "x", "email": "x@example.com"}),
        ("DELETE", "/api/exchange-settings/s2", {}),
        ("PUT", "/api/labels/l1", {"settings": ["s1"], "devices": ["d1"]}),
        ("PUT", "/api/labels/l2", {}),
        ("PUT", "/api/devices/d1/labels", {"labels": ["l2"]}),
        ("POST", "/api/devices/d1/labels", {"add": ["l1"]}),
        ("POST", "/api/labels/l1/devices", {"remove": ["d1"]}),
        ("DELETE", "/api/labels/l2", {}),
        ("PUT", "/api/devices/d1/compliance", {"violations": ["compromised"]}),
        ("PUT", "/api/preferences", {"max_devices_per_mailbox": 5}),
        (
            "POST",
            "/api/access-rules",
            {"name": "old", "field": "protocol_version", "match": "lt", "value": "14.0"}
            | {"action": "quarantine", "note": "n"},
        ),
        (
            "POST",
            "/api/access-rules",
            {"name": "ipad", "field": "device_type", "match": "glob", "value": "iP?d*"}
            | {"action": "block", "position": 1},
        ),
        ("POST", "/api/access-rules/ipad/move", {"position": 2, "note": "n"}),
        ("DELETE", "/api/access-rules/ipad", {"note": "n"}),
        ("POST", "/api/associations/DOCDEV2/bob/block", {"note": "n"}),
        ("POST", "/api/device-ids/docdev2/reset-backend-type", {"note": "n"}),
        ("POST", "/api/devices/d1/reset-backend-type", {"note": "n", "backend_type": "exchange"}),
        ("POST", "/api/associations/DOCDEV2/bob/allow", {"note": "n"}),
        ("POST", "/api/associations/DOCDEV2/bob/link", {"note": "n", "device": "d1"}),
        ("POST", "/api/associations/actions/allow", {"filter": {"user": "bob"}, "note": "n"}),
        ("POST", "/api/associations/actions/block", {"filter": {"user": "bob"}, "note": "n"}),
        ("POST", "/api/associations/actions/reset", {"filter": {"user": "bob"}, "note": "n"}),
        ("POST", "/api/associations/DOCDEV2/bob/block", {"note": "n"}),
        ("POST", "/api/associations/DOCDEV2/bob/reset", {"note": "n"}),
        ("POST", "/api/associations/DOCDEV9/alice/preapprove", {"note": "n"}),
        ("POST", "/api/associations/DOCDEV2/bob/wipe", {"note": "n", "account_only": False}),
        ("POST", "/api/associations/DOCDEV2/bob/remove", {"note": "n"}),
        ("POST", "/api/associations/actions/wipe", {"filter": {"user": "alice"}, "note": "n"}),
        ("POST", "/api/associations/actions/remove", {"filter": {"user": "alice"}, "note": "n"}),
        ("POST", "/api/devices/d1/retire", {}),
        ("DELETE", "/api/redirects/alice", {"note": "mailbox moved back"}),
        ("DELETE", "/api/redirects", {}),
    ]
    _cache_a_redirect(gateway, "alice")
    changed_routes = set()
    for method, path, body in calls:
        before = (await api.ok("GET", "/api/audit"))["total"]
        status, answer = await api.call(method, path, body)
        template, op = operation(doc, method, path)
        assert str(status) in op["responses"], (method, path, status, answer)
        schema = op["responses"][str(status)]["content"]["application/json"]["schema"]
        conforms(answer, schema, doc)
        assert status < 300, (method, path, answer)
        assert (await api.ok("GET", "/api/audit"))["total"] > before, (method, path)
        changed_routes.add((method, template))
    changing = {(r.method, r.path) for r in ROUTES if r.changes} - NEEDS_A_DIRECTORY
    assert changing == changed_routes  # the scenario covered every changing route
    reads = [
        "/api/associations?user=o",
        "/api/associations/DOCDEV1/alice",
        "/api/users",
        "/api/users/alice",
        "/api/devices",
        "/api/devices/d1",
        "/api/backend-types",
        "/api/exchange-settings",
        "/api/labels",
        "/api/preferences",
        "/api/pools",
        "/api/redirects",
        "/api/audit",
        "/api/store",
        "/api/directory",
        "/api/openapi.json",
        "/api/users/nobody",
        "/api/associations?limit=-1",
    ]
    for path in reads:
        status, answer = await api.get(path)
        _, op = operation(doc, "GET", path)
        assert str(status) in op["responses"], (path, status)
        conforms(answer, op["responses"][str(status)]["content"]["application/json"]["schema"], doc)


def _cache_a_redirect(gateway: DemoGateway, user: str) -> None:
    """A cached 451 redirect for ``user`` (the demo pools have one server each)."""
    server = gateway.gateway.upstreams.pools["exchange"].servers[0]
    target = Target(server.url, "exchange")
    gateway.gateway.redirect_cache.put(Mailbox(user, None), "exchange", target, time.time())


# --- Every endpoint: 401, 400 and 404 paths, generated from the route table ---


def concrete(path: str) -> str:
    """A route path with every parameter filled with a name that exists nowhere."""
    values = {"action": "block"}
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "nobody-here"), path)


UPSERTS = {
    ("PUT", "/api/users/{principal}"),
    ("PUT", "/api/exchange-settings/{name}"),
    ("PUT", "/api/labels/{name}"),
    ("POST", "/api/associations/{device_id}/{user}/preapprove"),  # creates the row
}


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.path}")
async def test_every_route_answers_401_400_and_404(api: Api, route: Any) -> None:
    path = concrete(route.path)
    status, _ = await api.call(route.method, path, {}, token=None)
    assert status == 401
    assert api.last_headers["WWW-Authenticate"].startswith("Bearer")
    if route.body is not None:
        status, body = await api.call(route.method, path, data=b'{"note": ')
        assert (status, list(body["fields"])) == (400, ["body"])
        status, body = await api.call(route.method, path, {"unknown_field": 1})
        assert status == 400 and body["fields"]["unknown_field"] == "unknown field"
    else:
        status, body = await api.call(route.method, path + "?unknown_param=1")
        assert status == 400 and body["fields"]["unknown_param"] == "unknown query parameter"
    if route.params and (route.method, route.path) not in UPSERTS:
        payload = {"note": "n", "violations": [], "labels": [], "all": True, "device": "d"}
        payload["position"] = 1  # a rule move: a valid position, an unknown rule
        fields = route.body or {}
        status, body = await api.call(
            route.method, path, {k: payload[k] for k in fields if k in payload}
        )
        expected = 200 if route.path.startswith("/api/associations/actions") else 404
        assert status == expected, (status, body)
