"""Exchange settings and labels: templates checked, pushed accounts resolved per device,
priorities, and pushes that cannot work refused (or flagged) when they are configured."""

from __future__ import annotations

import asyncio

import pytest
from admin_support import Api
from structlog.testing import capture_logs

from sentry.cli import main
from sentry.testing.gateway import DemoGateway

SECOND = {"user_name": "$USER_CUSTOM1$", "email": "$USER_CUSTOM2$"}


async def test_settings_crud_and_template_check(api: Api) -> None:
    setting = await api.ok("PUT", "/api/exchange-settings/second", SECOND | {"note": "seed"})
    assert setting == {"name": "second", **SECOND, "server": "localhost", "priority": 1}
    own = {"user_name": "$USERID$", "email": "$EMAIL$", "server": "mail.example.com"}
    assert (await api.ok("PUT", "/api/exchange-settings/own", own))["priority"] == 2  # after
    listed = await api.ok("GET", "/api/exchange-settings")
    assert [s["name"] for s in listed["items"]] == ["second", "own"]  # in priority order
    await api.ok("PUT", "/api/exchange-settings/own", own | {"priority": 1})
    listed = await api.ok("GET", "/api/exchange-settings")
    assert [(s["name"], s["priority"]) for s in listed["items"]] == [("own", 1), ("second", 1)]
    again = await api.ok("PUT", "/api/exchange-settings/second", SECOND)
    assert again["priority"] == 1  # a replaced setting keeps its priority
    for bad, problem in ((0, "must be at least 1"), (10000, "must be at most 9999")):
        status, body = await api.put("/api/exchange-settings/x", SECOND | {"priority": bad})
        assert (status, body["fields"]) == (400, {"priority": problem})
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
    assert actions == ["delete_setting", "put_setting", "put_setting", "put_setting"]


async def test_labels_crud_and_references(api: Api) -> None:
    await api.ok("PUT", "/api/exchange-settings/second", SECOND)
    await api.ok("POST", "/api/devices", {"id": "ph1", "owner": "alice"}, status=201)
    await api.ok("POST", "/api/devices", {"id": "ph2", "owner": "bob"}, status=201)
    label = await api.ok("PUT", "/api/labels/two", {"settings": ["second"], "devices": ["ph1"]})
    assert label == {"name": "two", "settings": ["second"], "devices": ["ph1"]}
    status, body = await api.put("/api/labels/x", {"settings": ["nope"], "devices": ["ph9"]})
    assert (status, body["fields"]) == (
        409,
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
    device = {"id": "phone", "owner": "alice", "platform": "ios", "labels": ["all"]}
    await api.ok("POST", "/api/devices", device, status=201)
    detail = await api.ok("GET", "/api/devices/phone")
    assert [m["principal"] for m in detail["pushed"]] == ["alice.b", "alice.c"]
    assert detail["pushed"][0] == {
        "setting": "b",
        "user_name": "alice.b",
        "email": "alice@example.com",
        "principal": "alice.b",
    }
    (error,) = detail["push_errors"]
    assert "'a'" in error and "$USER_CUSTOM2$ has no value" in error  # unresolved: no account
    assert detail["push_problems"] == []
    alice = {"email": "alice@example.com", "custom1": "shared", "custom2": "shared@example.com"}
    await api.ok("PUT", "/api/users/alice", alice)
    detail = await api.ok("GET", "/api/devices/phone")
    assert [m["setting"] for m in detail["pushed"]] == ["a", "b", "c"]  # priority order


async def test_android_cap_is_checked_by_priority_when_the_push_is_configured(api: Api) -> None:
    # An Android device holds two Exchange accounts, its owner's own included: one
    # setting pushes another account; a second one is refused when configured.
    await api.ok("PUT", "/api/users/alice", {"email": "alice@example.com"})
    await api.ok("PUT", "/api/exchange-settings/own", {"user_name": "$USERID$", "email": "$EMAIL$"})
    await api.ok("PUT", "/api/exchange-settings/b", {"user_name": "bob", "email": "b@example.com"})
    low = {"user_name": "shared", "email": "s@example.com", "priority": 50}
    await api.ok("PUT", "/api/exchange-settings/shared", low)
    await api.ok("PUT", "/api/labels/two", {"settings": ["own", "b"]})
    device = {"id": "droid", "owner": "alice", "platform": "android", "labels": ["two"]}
    await api.ok("POST", "/api/devices", device, status=201)
    assert [m["setting"] for m in (await api.ok("GET", "/api/devices/droid"))["pushed"]] == [
        "own",
        "b",
    ]
    status, body = await api.put("/api/labels/two", {"settings": ["own", "b", "shared"]})
    assert status == 409
    (problem,) = body["problems"]
    assert (problem["device"], problem["setting"], problem["reason"]) == (
        "droid",
        "shared",
        "ANDROID_LIMIT",
    )  # priority 50 comes after b (priority 2): shared is the one too many
    assert "one Exchange account too many" in body["error"]
    assert (await api.ok("GET", "/api/labels"))["items"][0]["settings"] == ["b", "own"]
    # Raising shared's priority over b's would make b the one too many: refused too.
    status, body = await api.put("/api/exchange-settings/shared", low | {"priority": 1})
    assert status == 200  # not applied to the device yet: nothing to refuse
    status, body = await api.put("/api/labels/two", {"settings": ["own", "b", "shared"]})
    assert [p["setting"] for p in body["problems"]] == ["b"]
    # The same push to an iPhone is fine; making it an Android device is refused.
    await api.ok("POST", "/api/devices", {"id": "ipad", "owner": "alice"}, status=201)
    await api.ok("PUT", "/api/labels/three", {"settings": ["own", "b", "shared"]})
    await api.ok("PUT", "/api/devices/ipad/labels", {"labels": ["three"]})
    audited = (await api.ok("GET", "/api/audit?limit=1"))["total"]
    status, body = await api.put("/api/devices/droid/labels", {"labels": ["three"]})
    assert status == 409 and body["problems"][0]["device"] == "droid"
    status, body = await api.post("/api/devices/droid/labels", {"add": ["three"]})
    assert status == 409 and body["problems"][0]["device"] == "droid"
    status, body = await api.post("/api/labels/three/devices", {"add": ["droid"]})
    assert status == 409 and body["problems"][0]["device"] == "droid"
    assert (await api.ok("GET", "/api/audit?limit=1"))["total"] == audited  # nothing written


async def test_a_push_of_another_backend_type_is_refused_when_configured(api: Api) -> None:
    # DEMO_ROUTING: carol's mailbox is on the gmail-type pool, alice's on exchange.
    await api.ok("PUT", "/api/users/alice", {"email": "alice@example.com", "custom1": "bob"})
    await api.ok("PUT", "/api/users/carol", {"email": "carol@gmail.example"})
    await api.ok("PUT", "/api/exchange-settings/c", {"user_name": "carol", "email": "c@x.example"})
    await api.ok("PUT", "/api/exchange-settings/sec", {"user_name": "$USER_CUSTOM1$"} | EMAIL)
    await api.ok("POST", "/api/devices", {"id": "ph", "owner": "alice"}, status=201)
    status, body = await api.put("/api/labels/mixed", {"settings": ["c"], "devices": ["ph"]})
    assert status == 409
    (problem,) = body["problems"]
    assert (problem["device"], problem["setting"], problem["reason"]) == (
        "ph",
        "c",
        "MIXED_BACKEND",
    )
    assert "'carol' (backend type gmail) to a device of backend type exchange" in body["error"]
    await api.ok("PUT", "/api/labels/fine", {"settings": ["sec"], "devices": ["ph"]})
    # A template change that would push carol instead is refused as well.
    status, body = await api.put(
        "/api/exchange-settings/sec", {"user_name": "carol", "email": "c@x.example"}
    )
    assert status == 409 and body["problems"][0]["setting"] == "sec"
    # A directory change is the directory's truth: accepted, and flagged (logged too).
    with capture_logs() as logs:
        user = await api.ok(
            "PUT", "/api/users/alice", {"email": "alice@example.com", "custom1": "carol"}
        )
    flagged = [e for e in logs if e["event"] == "push_problems"]
    assert flagged and flagged[0]["log_level"] == "warning" and flagged[0]["user"] == "alice"
    assert [(p["device"], p["setting"], p["reason"]) for p in user["push_problems"]] == [
        ("ph", "sec", "MIXED_BACKEND")
    ]
    detail = await api.ok("GET", "/api/devices/ph")
    assert [p["reason"] for p in detail["push_problems"]] == ["MIXED_BACKEND"]
    # Fixing it clears the flag; an unrelated write is not refused for an old problem.
    user = await api.ok("PUT", "/api/users/alice", {"email": "alice@example.com", "custom1": "bob"})
    assert user["push_problems"] == []
    assert (await api.ok("GET", "/api/devices/ph"))["push_problems"] == []


EMAIL = {"email": "$EMAIL$"}


async def test_cli_priority_and_refused_push(
    api: Api, gateway: DemoGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = ["--url", gateway.admin_url, f"--token={gateway.gateway.admin_token}"]

    async def run(*argv: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(main, ["admin", *argv, *flags])
        out, err = capsys.readouterr()
        return code, out, err

    with capture_logs():
        await api.ok("PUT", "/api/users/carol", {"email": "carol@gmail.example"})
        await api.ok("PUT", "/api/users/alice", {"email": "alice@example.com"})
        code, out, _ = await run(
            "exchange-settings", "set", "c", "--user-name", "carol", "--email", "c@x",
            "--priority", "7",
        )  # fmt: skip
        assert code == 0 and "priority: 7" in out
        code, out, _ = await run("exchange-settings", "list")
        assert out.splitlines()[0].split()[:2] == ["PRIORITY", "NAME"]
        await api.ok("POST", "/api/devices", {"id": "ph", "owner": "alice"}, status=201)
        code, _, err = await run("labels", "set", "l", "--setting", "c", "--add", "ph")
    assert code == 1 and "HTTP 409" in err
    assert "'carol' (backend type gmail) to a device of backend type exchange" in err
