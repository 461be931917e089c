"""The association list and the actions on it, over HTTP against a real gateway."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
from admin_support import Api, device, folder_sync_status, held_ping
from structlog.testing import capture_logs

from sentry.policy import Touch
from sentry.testing.gateway import DemoGateway

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
WIPE_ACK = '<Provision xmlns="Provision"><RemoteWipe><Status>1</Status></RemoteWipe></Provision>'


async def seed(gw: DemoGateway, session: aiohttp.ClientSession) -> None:
    """alice and shared on PHONE1, bob on PHONE2 and TABLET3."""
    for user, dev in (("alice", "PHONE1"), ("shared", "PHONE1"), ("bob", "PHONE2")):
        await device(gw, session, user, dev).provision()
    await device(gw, session, "bob", "TABLET3", device_type="iPad").provision()


def keys(page: dict[str, Any]) -> list[tuple[str, str]]:
    return [(i["device_id"], i["user"]) for i in page["items"]]


async def test_list_shows_every_association_with_its_decision(
    api: Api, gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    await seed(gateway, session)
    page = await api.ok("GET", "/api/associations")
    assert (page["total"], page["offset"], page["limit"]) == (4, 0, 100)
    assert keys(page) == [
        ("PHONE1", "alice"),
        ("PHONE2", "bob"),
        ("TABLET3", "bob"),
        ("PHONE1", "shared"),
    ]
    item = page["items"][0]
    assert item["state"] == "allowed" and item["verdict"] == "forward"
    assert (item["device_type"], item["protocol_version"]) == ("TestPhone", "16.1")
    assert item["user_agent"] == "SentryTest/1.0"
    assert (item["linked"], item["device"], item["unlinked"]) == (False, None, "device_unknown")
    assert (item["pool"], item["backend_type"], item["override"]) == ("exchange", "exchange", None)
    assert ISO.match(item["first_seen"]) and ISO.match(item["last_seen"])
    assert item["reasons"] == [] and item["violations"] == [] and not item["ambiguous_policy"]


async def test_list_filters_search_and_paging(
    api: Api, gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    await seed(gateway, session)
    await api.ok("POST", "/api/associations/PHONE2/bob/block", {"note": "lost"})
    cases = {
        "?user=bob": [("PHONE2", "bob"), ("TABLET3", "bob")],
        "?user=BOB": [("PHONE2", "bob"), ("TABLET3", "bob")],
        "?user=CORP%5CBob": [],  # no realm configured: corp\\bob is another principal
        "?user=bob@example.com": [],  # no realm, no user record: another principal
        "?user=a": [("PHONE1", "alice"), ("PHONE1", "shared")],  # a part of the name
        "?user=zed": [],
        "?user=b&state=blocked": [("PHONE2", "bob")],
        "?state=blocked": [("PHONE2", "bob")],
        "?reason=MANUAL": [("PHONE2", "bob")],
        "?device_id=phone1": [("PHONE1", "alice"), ("PHONE1", "shared")],
        "?device_type=iPad": [("TABLET3", "bob")],
        "?linked=false&pool=exchange&state=allowed": [
            ("PHONE1", "alice"),
            ("TABLET3", "bob"),
            ("PHONE1", "shared"),
        ],
        "?linked=true": [],
        "?pool=gmail": [],
        "?user=": [
            ("PHONE1", "alice"),
            ("PHONE2", "bob"),
            ("TABLET3", "bob"),
            ("PHONE1", "shared"),
        ],
    }
    for query, expected in cases.items():
        page = await api.ok("GET", "/api/associations" + query)
        assert keys(page) == expected, query
        assert page["total"] == len(expected), query
    page = await api.ok("GET", "/api/associations?offset=1&limit=2")
    assert keys(page) == [("PHONE2", "bob"), ("TABLET3", "bob")]
    assert (page["total"], page["offset"], page["limit"]) == (4, 1, 2)
    page = await api.ok("GET", "/api/associations?user=b&offset=1&limit=5")
    assert (keys(page), page["total"]) == ([("TABLET3", "bob")], 2)


async def test_list_rejects_bad_query_parameters(api: Api) -> None:
    status, body = await api.get(
        "/api/associations?limit=0&offset=-1&linked=maybe&state=lost&reason=X&colour=red"
    )
    assert status == 400
    assert body["fields"] == {
        "limit": "must be at least 1",
        "offset": "must be at least 0",
        "linked": "must be true or false",
        "state": "must be one of: allowed, blocked, quarantined, wipe_pending, wiped",
        "reason": body["fields"]["reason"],
        "colour": "unknown query parameter",
    }
    assert body["fields"]["reason"].startswith("must be one of: WIPE, NO_BACKEND")
    status, body = await api.get("/api/associations?limit=ten")
    assert (status, body["fields"]) == (400, {"limit": "must be an integer"})


async def test_one_association_shows_its_decision_reasons_and_history(
    api: Api, gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    await seed(gateway, session)
    await api.ok("POST", "/api/associations/PHONE1/alice/block", {"note": "check"})
    row = await api.ok("GET", "/api/associations/phone1/ALICE")
    assert (row["device_id"], row["user"], row["state"]) == ("PHONE1", "alice", "blocked")
    assert row["decision"] == {"kind": "refuse", "status": 129, "reasons": ["MANUAL"]} | {
        "violations": []
    }
    assert row["override"]["kind"] == "block" and row["override"]["note"] == "check"
    assert row["device_information"]["model"] == "TestPhone 1"
    assert row["managed_device"] is None
    # the backend's acceptance verified the row and established the device's
    # backend type, provisioning recorded the backend's policy, then the admin blocked
    kinds = ["first_seen", "verified", "established", "policy", "admin"]
    assert [e["kind"] for e in row["history"]] == kinds
    assert row["history"][3]["detail"]["fingerprint"]
    assert row["history"][2]["detail"] == {"scope": "eas:PHONE1", "backend_type": "exchange"}
    assert row["history"][4]["detail"]["note"] == "check"
    assert row["verified"] and not row["throwaway"]
    assert row["backend_scope"] == "eas:PHONE1"
    assert row["established_backend_type"]["backend_type"] == "exchange"
    assert row["established_backend_type"]["set_by"] == {"device_id": "PHONE1", "user": "alice"}
    status, body = await api.get("/api/associations/NOPE/alice")
    assert status == 404 and "NOPE" in body["error"]


async def test_block_allow_wipe_remove_on_the_wire(
    api: Api, gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    phone = device(gateway, session, "alice", "WIREDEV1")
    await phone.provision()
    row = "/api/associations/WIREDEV1/alice"
    answer = await api.ok("POST", row + "/block", {"note": "stolen"})
    assert answer["association"]["state"] == "blocked" and answer["polls_ended"] == 0
    assert await folder_sync_status(phone) == "129"
    await api.ok("POST", row + "/allow", {"note": "found again"})
    assert await folder_sync_status(phone) == "1"
    answer = await api.ok("POST", row + "/wipe", {"note": "left", "account_only": True})
    assert answer["association"]["state"] == "wipe_pending"
    assert answer["association"]["override"]["account_only"] is True
    assert await folder_sync_status(phone) == "140"  # RemoteWipeRequested
    assert (await phone.post("Provision", WIPE_ACK)).status == 200
    assert (await api.ok("GET", row))["state"] == "wiped"
    for action in ("allow", "block", "wipe"):
        status, body = await api.post(f"{row}/{action}", {"note": "again"})
        assert status == 409, action
        assert "wiped" in body["error"]
    status, _ = await api.post(row + "/link", {"note": "x", "device": "nope"})
    assert status == 409
    answer = await api.ok("POST", row + "/remove", {"note": "done"})
    assert answer == {"association": None, "polls_ended": 0}
    assert (await api.get(row))[0] == 404
    assert (await api.post(row + "/remove", {"note": "twice"}))[0] == 404


async def test_action_input_errors(
    api: Api, gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    await device(gateway, session, "bob", "INPUTDEV").provision()
    row = "/api/associations/INPUTDEV/bob"
    cases: list[tuple[str, Any, dict[str, str]]] = [
        ("block", {}, {"note": "required"}),
        ("block", {"note": "   "}, {"note": "must not be blank"}),
        ("block", {"note": 5}, {"note": "must be a string"}),
        ("block", {"note": "x", "account_only": True}, {"account_only": "unknown field"}),
        ("wipe", {"note": "x", "account_only": "yes"}, {"account_only": "must be true or false"}),
        ("allow", {"note": "x", "device": "d"}, {"device": "unknown field"}),
        ("link", {"note": "x"}, {"device": "required"}),
        ("block", {"note": "x", "colour": "red"}, {"colour": "unknown field"}),
        ("block", ["note"], {"body": "must be a JSON object"}),
    ]
    for action, body, fields in cases:
        status, answer = await api.post(f"{row}/{action}", body)
        assert (status, answer["fields"]) == (400, fields), (action, body)
    status, answer = await api.post(f"{row}/block", data=b"{not json")
    assert status == 400 and answer["fields"]["body"].startswith("not valid JSON")
    status, answer = await api.post(f"{row}/explode", {"note": "x"})
    assert (status, answer) == (404, {"error": "Not Found"})  # no such action route
    status, answer = await api.post(row + "/block", {"note": "x"}, headers={"X-Sentry-Actor": " "})
    assert (status, answer["fields"]) == (
        400,
        {"X-Sentry-Actor": answer["fields"]["X-Sentry-Actor"]},
    )
    assert (await api.ok("GET", row))["override"] is None  # nothing was applied


async def test_link_to_a_managed_device(
    api: Api, gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    await device(gateway, session, "bob", "LINKDEV1").provision()
    await api.ok("PUT", "/api/users/bob", {"email": "bob@example.com"})
    await api.ok("POST", "/api/devices", {"id": "phone-9", "owner": "alice"}, status=201)
    link = "/api/associations/LINKDEV1/bob/link"
    status, answer = await api.post(link, {"note": "x", "device": "phone-404"})
    assert status == 409 and "phone-404" in answer["error"]
    answer = await api.ok("POST", link, {"note": "x", "device": "phone-9"})
    row = answer["association"]
    assert (row["manual_link"], row["device"], row["linked"]) == ("phone-9", "phone-9", True)
    assert (await api.ok("GET", "/api/associations/LINKDEV1/bob"))["managed_device"][
        "id"
    ] == "phone-9"


async def test_bulk_action_dry_run_skips_and_audit(
    api: Api, gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    await seed(gateway, session)
    body = {"filter": {"user": "bob"}, "note": "travel", "dry_run": True}
    with capture_logs() as logs:
        answer = await api.ok("POST", "/api/associations/actions/block", body)
    events = [e for e in logs if e["event"].startswith("admin_")]
    assert events == [
        {"event": "admin_dry_run", "dry_run": True, "would_change": 2, "actor": "admin"}
        | {"method": "POST", "route": "/api/associations/actions/block"}  # one route per action
        | {"log_level": "info"}
    ]
    assert answer["matched"] == 2 and answer["dry_run"] is True
    assert answer["changed"] == [
        {"device_id": "PHONE2", "user": "bob"},
        {"device_id": "TABLET3", "user": "bob"},
    ]
    assert (await api.ok("GET", "/api/associations?state=blocked"))["total"] == 0
    assert (await api.ok("GET", "/api/audit"))["total"] == 0
    answer = await api.ok("POST", "/api/associations/actions/block", body | {"dry_run": False})
    assert len(answer["changed"]) == 2 and answer["skipped"] == []
    assert (await api.ok("GET", "/api/associations?state=blocked"))["total"] == 2
    audit = (await api.ok("GET", "/api/audit"))["items"]
    assert [e["action"] for e in audit] == ["bulk_block", "block", "block"]
    assert audit[0]["before"] == {"filter": {"user": "bob"}, "matched": 2}
    # A wiped row is skipped with the reason; the others still change.
    await api.ok("POST", "/api/associations/PHONE1/alice/wipe", {"note": "gone"})
    phone = device(gateway, session, "alice", "PHONE1")
    await phone.post("Provision", WIPE_ACK)
    answer = await api.ok(
        "POST", "/api/associations/actions/allow", {"filter": {"device_id": "phone1"}, "note": "ok"}
    )
    assert answer["changed"] == [{"device_id": "PHONE1", "user": "shared"}]
    assert answer["skipped"][0]["key"] == {"device_id": "PHONE1", "user": "alice"}
    assert "wiped" in answer["skipped"][0]["error"]


async def test_bulk_action_input_errors(api: Api) -> None:
    url = "/api/associations/actions/"
    no_filter = {"filter": 'give at least one filter, or "all": true to act on every row'}
    for body in ({"note": "x"}, {"filter": {}, "note": "x"}):
        status, answer = await api.post(url + "block", body)
        assert (status, answer["fields"]) == (400, no_filter)
    status, answer = await api.post(url + "block", {"filter": {"user": " "}, "note": "x"})
    assert (status, answer["fields"]) == (400, {"filter.user": "must not be blank"})
    status, body = await api.post(
        url + "block", {"filter": {"user": "b"}, "all": True, "note": "x"}
    )
    assert (status, body["fields"]) == (400, {"all": "not together with a filter"})
    status, body = await api.post(url + "block", {"filter": {"state": "x", "age": 3}, "note": "x"})
    assert status == 400
    assert body["fields"] == {"filter.state": body["fields"]["filter.state"]} | {
        "filter.age": "unknown field"
    }
    status, body = await api.post(url + "block", {"filter": {}, "note": "x", "account_only": True})
    assert (status, body["fields"]) == (400, {"account_only": "unknown field"})
    # no bulk link: that URL names a row (device "actions", user "link"), which only GETs
    assert (await api.post(url + "link", {"all": True, "note": "x"}))[0] == 405
    answer = await api.ok("POST", url + "remove", {"all": True, "note": "nothing there"})
    assert answer == {"matched": 0, "changed": [], "skipped": []} | {
        "dry_run": False,
        "polls_ended": 0,
    }


async def test_bulk_block_is_one_transaction_and_ends_every_held_ping(
    api: Api, gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    count = 200
    pings = await asyncio.gather(
        *(held_ping(gateway, session, "bob", f"BULK{i:04d}") for i in range(count))
    )
    await held_ping(gateway, session, "alice", "BULKALICE")  # not matched: keeps its Ping
    await gateway.wait_held(count + 1)  # every Ping is held upstream before the block
    store = gateway.gateway.store
    writes: list[int] = []
    original = store.apply

    async def counting(changes: Any) -> None:
        # Count the transactions that change state; a batch of last-seen
        # times (Touch only) is not one the bulk action writes.
        if not all(isinstance(c, Touch) for c in changes):
            writes.append(len(changes))
        await original(changes)

    store.apply = counting  # type: ignore[method-assign]
    answer = await api.ok(
        "POST", "/api/associations/actions/block", {"filter": {"user": "bob"}, "note": "bulk"}
    )
    answers = await asyncio.wait_for(asyncio.gather(*(p for _, p in pings)), 30)
    assert (answer["matched"], len(answer["changed"]), answer["polls_ended"]) == (200, 200, 200)
    assert all((r.status, r.text("Status")) == (200, "129") for r in answers)
    assert len(writes) == 1, writes  # one store transaction for all 200 rows
    assert writes[0] == 3 * count + 1  # row, history, audit each + the bulk audit entry
    assert gateway.gateway.state.longpolls.count() == 1  # alice's Ping is still held


async def test_account_only_wipe_needs_a_16_1_client(
    api: Api, gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    await device(gateway, session, "bob", "OLDPHONE", version="14.1").provision()
    await device(gateway, session, "bob", "NEWPHONE").provision()
    status, body = await api.post(
        "/api/associations/OLDPHONE/bob/wipe", {"note": "x", "account_only": True}
    )
    assert status == 409 and "16.1" in body["error"]
    bulk = {"filter": {"user": "bob"}, "note": "x", "account_only": True, "dry_run": True}
    answer = await api.ok("POST", "/api/associations/actions/wipe", bulk)
    assert answer["changed"] == [{"device_id": "NEWPHONE", "user": "bob"}]
    assert [s["key"]["device_id"] for s in answer["skipped"]] == ["OLDPHONE"]
