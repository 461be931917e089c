"""Exchange settings and labels: templates checked, pushed accounts resolved per device."""

from __future__ import annotations

from admin_support import Api

SECOND = {"user_name": "$USER_CUSTOM1$", "email": "$USER_CUSTOM2$"}


async def test_settings_crud_and_template_check(api: Api) -> None:
    setting = await api.ok("PUT", "/api/exchange-settings/second", SECOND | {"note": "seed"})
    assert setting == {"name": "second", **SECOND, "server": "localhost"}  # the gateway FQDN
    own = {"user_name": "$USERID$", "email": "$EMAIL$", "server": "mail.example.com"}
    await api.ok("PUT", "/api/exchange-settings/own", own)
    listed = await api.ok("GET", "/api/exchange-settings")
    assert [s["name"] for s in listed["items"]] == ["own", "second"]
    status, body = await api.put(
        "/api/exchange-settings/bad", {"user_name": "$USER_CUSTOM9$", "email": "$Email$"}
    )
    assert status == 400
    assert body["fields"]["user_name"].startswith(
        "unknown variable $USER_CUSTOM9$ (known: $USERID$"
    )
    assert "email" not in body["fields"]  # variables are case-insensitive, like the resolver
    status, body = await api.put("/api/exchange-settings/bad", {"user_name": ""})
    assert body["fields"] == {"user_name": "must not be blank", "email": "required"}
    assert await api.ok("DELETE", "/api/exchange-settings/own", {"note": "unused"}) == {
        "deleted": "own",
        "polls_ended": 0,
    }
    assert (await api.delete("/api/exchange-settings/own"))[0] == 404
    actions = [e["action"] for e in (await api.ok("GET", "/api/audit"))["items"]]
    assert actions == ["delete_setting", "put_setting", "put_setting"]


async def test_labels_crud_and_references(api: Api) -> None:
    await api.ok("PUT", "/api/exchange-settings/second", SECOND)
    await api.ok("POST", "/api/devices", {"id": "ph1", "owner": "alice"}, status=201)
    await api.ok("POST", "/api/devices", {"id": "ph2", "owner": "bob"}, status=201)
    label = await api.ok("PUT", "/api/labels/two", {"settings": ["second"], "devices": ["ph1"]})
    assert label == {"name": "two", "settings": ["second"], "devices": ["ph1"]}
    status, body = await api.put("/api/labels/x", {"settings": ["nope"], "devices": ["ph9"]})
    assert (status, body["fields"]) == (
        400,
        {"settings": "no such Exchange setting: nope", "devices": "no such managed device: ph9"},
    )
    status, body = await api.delete("/api/exchange-settings/second")
    assert status == 409 and "two" in body["error"]  # still applied by the label
    await api.ok("PUT", "/api/devices/ph2/labels", {"labels": ["two"]})
    assert [lb["name"] for lb in (await api.ok("GET", "/api/labels"))["items"]] == ["two"]
    ph1 = await api.ok("GET", "/api/devices/ph1")
    assert ph1["labels"] == ["two"]  # one membership, shown the same way on both sides
    assert (await api.ok("GET", "/api/labels"))["items"][0]["devices"] == ["ph1", "ph2"]
    await api.ok("DELETE", "/api/labels/two", {"note": "reorg"})
    assert (await api.ok("GET", "/api/devices/ph2"))["labels"] == []  # taken off the device
    assert (await api.ok("GET", "/api/labels"))["items"] == []
    assert (await api.delete("/api/labels/two"))[0] == 404
    await api.ok("DELETE", "/api/exchange-settings/second")


async def test_pushed_accounts_resolve_templates_and_report_errors(api: Api) -> None:
    await api.ok("PUT", "/api/users/alice", {"email": "alice@example.com", "custom1": "shared"})
    for name, user_name in (("a", "$USER_CUSTOM1$"), ("b", "$USERID$.b"), ("c", "$USERID$.c")):
        email = "$USER_CUSTOM2$" if name == "a" else "$EMAIL$"
        await api.ok(
            "PUT", f"/api/exchange-settings/{name}", {"user_name": user_name} | {"email": email}
        )
    await api.ok("PUT", "/api/labels/all", {"settings": ["a", "b", "c"]})
    device = {"id": "droid", "owner": "alice", "platform": "android", "labels": ["all"]}
    await api.ok("POST", "/api/devices", device, status=201)
    detail = await api.ok("GET", "/api/devices/droid")
    assert detail["pushed"] == [
        {"setting": "b", "user_name": "alice.b", "email": "alice@example.com"}
        | {"principal": "alice.b"},
    ]
    first, third = detail["push_errors"]
    assert "'a'" in first and "$USER_CUSTOM2$ has no value" in first  # unresolved: no account
    assert "'c'" in third and "at most 2 Exchange settings" in third  # Android: the third
    alice = {"email": "alice@example.com", "custom1": "shared", "custom2": "shared@example.com"}
    await api.ok("PUT", "/api/users/alice", alice)
    detail = await api.ok("GET", "/api/devices/droid")
    assert [m["setting"] for m in detail["pushed"]] == ["a", "b"]
    assert "at most 2 Exchange settings" in detail["push_errors"][0]  # Android: the third
