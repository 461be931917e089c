"""Device access rules and quarantine through a real gateway: an old EAS client is
quarantined until an admin allows it, a new block rule ends a held Ping, the rules
and the matched rule survive a restart, and a rule that cannot work is a 400."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from admin_support import FOLDER_SYNC, Api, device, folder_sync_status, held_ping
from multidict import CIMultiDict

from sentry.eas.wbxml import encode
from sentry.eas.xmlform import from_xml
from sentry.testing.eas_client import WBXML_TYPE
from sentry.testing.gateway import DEMO_ROUTING, DemoGateway, demo_gateway, demo_pools

OLD_EAS = {
    "name": "old-eas",
    "field": "protocol_version",
    "match": "lt",
    "value": "14.0",
    "action": "quarantine",
    "note": "refuse clients below 14.0 until reviewed",
}


async def test_an_old_client_is_quarantined_until_an_admin_allows_it(
    api: Api, gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    added = await api.ok("POST", "/api/access-rules", OLD_EAS, status=201)
    assert added["rule"]["position"] == 1 and added["rule"]["actor"] == "admin"
    old = device(gateway, session, "alice", "OLDPHONE1", version="12.1")
    r = await old.post("FolderSync", FOLDER_SYNC)
    assert r.status == 403  # below 14.0 a refusal is HTTP 403 (design.md §4)
    new = device(gateway, session, "bob", "NEWPHONE1")
    await new.provision()
    assert await folder_sync_status(new) == "1"

    quarantine = await api.ok("GET", "/api/quarantine")
    assert quarantine["total"] == 1
    [row] = quarantine["items"]
    assert (row["device_id"], row["state"], row["access_rule"]) == (
        "OLDPHONE1",
        "quarantined",
        "old-eas",
    )
    assert row["reasons"] == ["QUARANTINE"]
    listed = await api.ok("GET", "/api/associations?state=quarantined")
    assert [r["device_id"] for r in listed["items"]] == ["OLDPHONE1"]
    detail = await api.ok("GET", "/api/associations/OLDPHONE1/alice")
    assert detail["decision"]["rule"] == "old-eas"
    refused = gateway.registry.get_sample_value("sentry_refusals_total", {"reason": "QUARANTINE"})
    assert refused == 1

    await api.ok("POST", "/api/associations/OLDPHONE1/alice/allow", {"note": "reviewed"})
    await old.provision()  # forwarded now: the backend provisions it, then it syncs
    assert await folder_sync_status(old) == "1"
    assert (await api.ok("GET", "/api/quarantine"))["total"] == 0
    row = await api.ok("GET", "/api/associations/OLDPHONE1/alice")
    assert (row["state"], row["reasons"]) == ("allowed", ["MANUAL", "QUARANTINE"])


async def test_a_block_rule_ends_a_held_ping_and_removing_it_restores_access(
    api: Api, gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    client, ping = await held_ping(gateway, session, "alice", "RULEPING1")
    rule = {"name": "no-test-phones", "field": "model", "match": "glob", "value": "testphone *"}
    answer = await api.ok("POST", "/api/access-rules", rule | {"action": "block"}, status=201)
    assert answer["polls_ended"] == 1
    r = await asyncio.wait_for(ping, 30)
    assert (r.status, r.text("Status")) == (200, "129")
    assert await folder_sync_status(client) == "129"
    removed = await api.ok("DELETE", "/api/access-rules/no-test-phones", {"note": "done"})
    assert removed == {"deleted": "no-test-phones", "polls_ended": 0}
    assert await folder_sync_status(client) == "1"
    actions = [e["action"] for e in (await api.ok("GET", "/api/audit"))["items"]]
    assert actions[:2] == ["remove_access_rule", "add_access_rule"]


async def test_rules_and_the_matched_rule_survive_a_restart(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    async with demo_gateway(tmp_path, demo_pools(), routing=DEMO_ROUTING) as gw:
        api = Api(session, gw.admin_url, gw.gateway.admin_token)
        await api.ok("POST", "/api/access-rules", OLD_EAS, status=201)
        ipad = {"name": "ipads", "field": "device_type", "match": "equals", "value": "iPad"}
        await api.ok("POST", "/api/access-rules", ipad | {"action": "allow"}, status=201)
        await api.ok("POST", "/api/access-rules/ipads/move", {"position": 1})
        r = await device(gw, session, "bob", "OLDPHONE2", version="2.5").post("FolderSync")
        assert r.status == 403
    async with demo_gateway(tmp_path, demo_pools(), routing=DEMO_ROUTING) as gw:
        api = Api(session, gw.admin_url, gw.gateway.admin_token)
        rules = (await api.ok("GET", "/api/access-rules"))["items"]
        assert [(r["name"], r["position"]) for r in rules] == [("ipads", 1), ("old-eas", 2)]
        assert rules[1]["note"] == OLD_EAS["note"]
        [row] = (await api.ok("GET", "/api/quarantine"))["items"]
        assert (row["device_id"], row["access_rule"]) == ("OLDPHONE2", "old-eas")


async def test_a_rule_that_cannot_work_is_a_400_and_changes_nothing(api: Api) -> None:
    base = {"name": "r1", "field": "protocol_version", "match": "lt", "value": "14.0"}
    base |= {"action": "block"}
    bad = [
        ({"match": "glob"}, None),
        ({"value": "fourteen"}, None),
        ({"field": "os", "match": "ge"}, None),
        ({"field": "os", "match": "equals", "value": "a\u0007b"}, None),
        ({"name": "has space"}, "name"),
        ({"action": "maybe"}, "action"),
        ({"value": "x" * 129}, "value"),
        ({"position": 0}, "position"),
    ]
    before = (await api.ok("GET", "/api/audit"))["total"]
    for change, field in bad:
        status, answer = await api.call("POST", "/api/access-rules", base | change)
        assert status == 400, (change, answer)
        if field is not None:
            assert field in answer["fields"], (change, answer)
    assert (await api.ok("GET", "/api/access-rules"))["items"] == []
    assert (await api.ok("GET", "/api/audit"))["total"] == before
    await api.ok("POST", "/api/access-rules", base, status=201)
    status, _ = await api.call("POST", "/api/access-rules", base)
    assert status == 409
    status, _ = await api.call("POST", "/api/access-rules/nope/move", {"position": 1})
    assert status == 404
    status, _ = await api.call("DELETE", "/api/access-rules/nope", {})
    assert status == 404


async def test_the_whole_quarantine_is_released_with_one_bulk_allow(
    api: Api, gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    await api.ok("POST", "/api/access-rules", OLD_EAS, status=201)
    for user, device_id in (("alice", "PDA1"), ("bob", "PDA2")):
        r = await device(gateway, session, user, device_id, version="12.1").post("FolderSync")
        assert r.status == 403
    body = {"filter": {"state": "quarantined"}, "note": "reviewed: all fine"}
    preview = await api.ok("POST", "/api/associations/actions/allow", body | {"dry_run": True})
    assert sorted(k["device_id"] for k in preview["changed"]) == ["PDA1", "PDA2"]
    await api.ok("POST", "/api/associations/actions/allow", body)
    assert (await api.ok("GET", "/api/quarantine"))["total"] == 0
    allowed = await api.ok("GET", "/api/associations?state=allowed&reason=QUARANTINE")
    assert allowed["total"] == 2


async def test_a_repeated_version_header_cannot_slip_past_a_version_rule(
    api: Api, gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    """Two ``MS-ASProtocolVersion`` headers (12.1, then 14.1): the gateway would
    decide on one copy while the backend may speak the other, so the request is
    400 before any decision and reaches no backend; one header is still judged."""
    await api.ok("POST", "/api/access-rules", OLD_EAS | {"action": "block"}, status=201)
    auth = aiohttp.encode_basic_auth("alice", "secret")
    query = "Cmd=FolderSync&User=alice&DeviceId=TWOVERSIONS1&DeviceType=iPhone"
    body = encode(from_xml(FOLDER_SYNC))

    async def folder_sync(*versions: str) -> int:
        headers = CIMultiDict([("Authorization", auth), ("Content-Type", WBXML_TYPE)])
        for version in versions:
            headers.add("MS-ASProtocolVersion", version)
        url = f"{gateway.url}/Microsoft-Server-ActiveSync?{query}"
        async with session.post(url, headers=headers, data=body) as resp:
            return resp.status

    assert await folder_sync("12.1", "14.1") == 400
    assert await folder_sync("14.1", "12.1") == 400
    assert gateway.backend("exchange").state.stats.requests["alice", "FolderSync"] == 0
    assert gateway.gateway.state.snapshot.on_device("TWOVERSIONS1") == []  # nothing recorded
    assert await folder_sync("12.1") == 403  # the rule: below 14.0 is blocked
    assert gateway.backend("exchange").state.stats.requests["alice", "FolderSync"] == 0
