"""Compliance through the admin API: a device marked non-compliant loses every
mailbox at once (held 900 s Pings answered 129 by the gateway, ended by the
API call itself), the same mailbox on another, compliant device keeps syncing,
and compliance restores access."""

from __future__ import annotations

import asyncio

import aiohttp
from admin_support import Api, folder_sync_status, held_ping

from sentry.model import AssociationKey
from sentry.testing.gateway import DemoGateway


async def test_non_compliant_device_loses_every_mailbox_at_once(
    api: Api, gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    await api.ok("PUT", "/api/users/alice", {"email": "alice@example.com"})
    phone = {"id": "alice-phone", "owner": "alice", "eas_device_ids": ["FLIP01"]}
    await api.ok("POST", "/api/devices", phone, status=201)
    alice, alice_ping = await held_ping(gateway, session, "alice", "FLIP01")
    shared, shared_ping = await held_ping(gateway, session, "shared", "FLIP01")
    tablet, tablet_ping = await held_ping(gateway, session, "alice", "FLIP02")  # compliant

    body = {"violations": ["compromised", "os_version"], "note": "jailbreak detected"}
    answer = await api.ok("PUT", "/api/devices/alice-phone/compliance", body)
    answers = await asyncio.wait_for(asyncio.gather(alice_ping, shared_ping), 30)
    assert answer["polls_ended"] == 2
    assert [(r.status, r.text("Status")) for r in answers] == [(200, "129"), (200, "129")]
    assert await folder_sync_status(alice) == "129"
    assert await folder_sync_status(shared) == "129"
    row = await api.ok("GET", "/api/associations/FLIP01/shared")
    assert (row["state"], row["reasons"]) == ("blocked", ["COMPLIANCE"])
    assert row["violations"] == ["compromised", "os_version"]
    blocked = await api.ok("GET", "/api/associations?reason=COMPLIANCE")
    assert [(r["device_id"], r["user"]) for r in blocked["items"]] == [
        ("FLIP01", "alice"),
        ("FLIP01", "shared"),
    ]

    # the same mailbox on a compliant device is unaffected: its Ping is still held
    assert set(gateway.gateway.state.longpolls.keys()) == {AssociationKey("FLIP02", "alice")}
    assert not tablet_ping.done()
    assert await folder_sync_status(tablet) == "1"

    answer = await api.ok("PUT", "/api/devices/alice-phone/compliance", {"violations": []})
    assert answer["device"]["compliant"] is True
    assert await folder_sync_status(alice) == "1"
    assert await folder_sync_status(shared) == "1"
    row = await api.ok("GET", "/api/associations/FLIP01/alice")
    assert (row["state"], row["reasons"], row["linked"]) == ("allowed", [], True)
    tablet_ping.cancel()
