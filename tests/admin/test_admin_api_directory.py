"""Users and managed devices through the admin API."""

from __future__ import annotations

import aiohttp
from admin_support import Api, device, folder_sync_status

from sentry.testing.gateway import DemoGateway

ALICE = {
    "email": "alice@example.com",
    "display_name": "Alice",
    "source": "ldap",
    "custom1": "shared",
    "custom2": "shared@example.com",
}


async def test_users_crud(api: Api) -> None:
    assert await api.ok("GET", "/api/users") == {"items": [], "total": 0, "offset": 0, "limit": 100}
    user = await api.ok("PUT", "/api/users/Alice", ALICE | {"note": "from LDAP"})
    assert user == {
        "principal": "alice",
        **ALICE,
        "custom3": None,
        "custom4": None,
        "aliases": [],
        "missing_since": None,
        "push_problems": [],
    }
    await api.ok("PUT", "/api/users/bob", {"email": "bob@example.com"})
    page = await api.ok("GET", "/api/users")
    assert [u["principal"] for u in page["items"]] == ["alice", "bob"]
    assert [u["principal"] for u in (await api.ok("GET", "/api/users?q=ALI"))["items"]] == ["alice"]
    assert (await api.ok("GET", "/api/users?offset=1&limit=1"))["items"][0]["principal"] == "bob"
    detail = await api.ok("GET", "/api/users/alice@example.com")
    assert detail["devices"] == [] and detail["associations"] == []
    changed = await api.ok("PUT", "/api/users/alice", ALICE | {"custom1": None, "custom2": ""})
    assert (changed["custom1"], changed["custom2"]) == (None, None)
    assert await api.ok("DELETE", "/api/users/bob", {"note": "left"}) == {
        "deleted": "bob",
        "polls_ended": 0,
        "push_problems": [],
    }
    assert (await api.get("/api/users/bob"))[0] == 404
    assert (await api.delete("/api/users/bob"))[0] == 404
    audit = (await api.ok("GET", "/api/audit"))["items"]
    assert [e["action"] for e in audit] == [
        "delete_user",
        "upsert_user",
        "upsert_user",
        "upsert_user",
    ]
    assert audit[-1]["note"] == "from LDAP" and audit[-1]["before"] is None
    assert audit[0]["before"]["principal"] == "bob" and audit[0]["after"] is None


async def test_user_input_errors(api: Api) -> None:
    status, body = await api.put(
        "/api/users/carol", {"email": 3, "source": "ad", "custom5": "x", "custom1": ["a"]}
    )
    assert status == 400
    assert body["fields"] == {
        "email": "must be a string",
        "source": "must be one of: local, ldap",
        "custom5": "unknown field",
        "custom1": "must be a string",
    }
    status, body = await api.put("/api/users/carol", {"email": "not-an-address"})
    assert (status, body["fields"]) == (400, {"email": "must be an email address"})
    status, body = await api.put("/api/users/CORP%5C", {})
    assert (status, body["fields"]) == (400, {"principal": "names no account"})
    assert (await api.get("/api/users"))[1]["total"] == 0


async def test_devices_register_show_compliance_labels_retire(
    api: Api, gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    await api.ok("PUT", "/api/users/alice", ALICE)
    body = {"id": "iphone-1", "owner": "Alice", "platform": "ios", "eas_device_ids": ["dev1a"]}
    answer = await api.ok("POST", "/api/devices", body | {"note": "enrolled"}, status=201)
    assert answer["device"] == {
        "id": "iphone-1",
        "owner": "alice",
        "platform": "ios",
        "eas_device_ids": ["DEV1A"],
        "compliant": True,
        "violations": [],
        "violation_details": [],
        "labels": [],
        "retired": False,
        "backend_type": None,
    }
    phone = device(gateway, session, "alice", "DEV1A")
    await phone.provision()
    detail = await api.ok("GET", "/api/devices/iphone-1")
    assert [a["user"] for a in detail["associations"]] == ["alice"]
    assert detail["associations"][0]["linked"] is True
    assert detail["pushed"] == [] and detail["push_errors"] == []
    answer = await api.ok("PUT", "/api/devices/iphone-1/compliance", {"violations": ["passcode"]})
    assert answer["device"]["compliant"] is False and answer["device"]["violations"] == ["passcode"]
    assert await folder_sync_status(phone) == "129"
    row = await api.ok("GET", "/api/associations/DEV1A/alice")
    assert (row["reasons"], row["violations"]) == (["COMPLIANCE"], ["passcode"])
    await api.ok("PUT", "/api/devices/iphone-1/compliance", {"violations": []})
    assert await folder_sync_status(phone) == "1"
    await api.ok("PUT", "/api/labels/vip", {})
    answer = await api.ok("PUT", "/api/devices/iphone-1/labels", {"labels": ["vip"]})
    assert answer["device"]["labels"] == ["vip"]
    listed = await api.ok("GET", "/api/devices?owner=ALICE")
    assert [d["id"] for d in listed["items"]] == ["iphone-1"] and listed["total"] == 1
    assert (await api.ok("GET", "/api/devices?owner=bob"))["total"] == 0
    answer = await api.ok("POST", "/api/devices/iphone-1/retire", {"note": "replaced"})
    assert answer["device"]["retired"] is True
    assert (await api.ok("GET", "/api/associations/DEV1A/alice"))["linked"] is False
    actions = [e["action"] for e in (await api.ok("GET", "/api/audit"))["items"]]
    assert actions == [
        "retire_device",
        "put_label",  # membership is recorded on the label
        "put_label",
        "set_compliance",
        "set_compliance",
        "register_device",
        "upsert_user",
    ]


async def test_device_errors(api: Api) -> None:
    status, body = await api.post(
        "/api/devices", {"owner": "", "platform": "nokia", "eas_device_ids": "X"}
    )
    assert status == 400
    assert body["fields"] == {
        "id": "required",
        "owner": "must not be blank",
        "platform": "must be one of: ios, android, windows, other",
        "eas_device_ids": "must be a list of strings",
    }
    await api.ok(
        "POST", "/api/devices", {"id": "d1", "owner": "bob", "eas_device_ids": ["E1"]}, 201
    )
    status, body = await api.post("/api/devices", {"id": "d1", "owner": "bob"})
    assert status == 409 and "already registered" in body["error"]
    status, body = await api.post(
        "/api/devices", {"id": "d2", "owner": "bob", "eas_device_ids": ["e1"]}
    )
    assert status == 409 and "E1" in body["error"] and "d1" in body["error"]
    status, body = await api.post("/api/devices", {"id": "d3", "owner": "bob", "labels": ["nope"]})
    assert (status, body["fields"]) == (409, {"labels": "no such label: nope"})
    for method, path, payload in (
        ("GET", "/api/devices/zz", None),
        ("PUT", "/api/devices/zz/compliance", {"violations": []}),
        ("POST", "/api/devices/zz/retire", {}),
        ("PUT", "/api/devices/zz/labels", {"labels": []}),
    ):
        status, _ = (
            await api.call(method, path, payload) if payload is not None else await api.get(path)
        )
        assert status == 404, path
    status, body = await api.put("/api/devices/d1/compliance", {"violations": ["ok", " "]})
    assert (status, body["fields"]) == (400, {"violations": "must not contain blank strings"})
    status, body = await api.put("/api/devices/d1/compliance", {})
    assert (status, body["fields"]) == (400, {"violations": "required"})
    status, body = await api.put("/api/devices/d1/labels", {"labels": ["nope"]})
    assert (status, body["fields"]) == (409, {"labels": "no such label: nope"})
    page = await api.ok("GET", "/api/devices")
    assert page["total"] == 1 and page["items"][0]["labels"] == []
