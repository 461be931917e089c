"""Compliance through the admin API: a device marked non-compliant loses every
mailbox at once (held Pings answered 129 within a second), the same mailbox on
another, compliant device keeps syncing, and compliance restores access."""

from __future__ import annotations

import asyncio
import time

import aiohttp
from admin_support import Api, folder_sync_status, held_ping

from sentry.testing.gateway import DemoGateway


async def test_non_compliant_device_loses_every_mailbox_within_a_second(
    api: Api, gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    await api.ok("PUT", "/api/users/alice", {"email": "alice@example.com"})
    phone = {"id": "alice-phone", "owner": "alice", "eas_device_ids": ["FLIP01"]}
    await api.ok("POST", "/api/devices", phone, status=201)
    alice, alice_ping = await held_ping(gateway, session, "alice", "FLIP01")
    shared, shared_ping = await held_ping(gateway, session, "shared", "FLIP01")
    tablet, tablet_ping = await held_ping(gateway, session, "alice", "FLIP02")  # compliant

    started = time.monotonic()
    body = {"violations": ["compromised", "os_version"], "note": "jailbreak detected"}
    answer = await api.ok("PUT", "/api/devices/alice-phone/compliance", body)
    answers = await asyncio.wait_for(asyncio.gather(alice_ping, shared_ping), 1.0)
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, elapsed
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

    assert not tablet_ping.done()  # the same mailbox on a compliant device is unaffected
    assert await folder_sync_status(tablet) == "1"

    answer = await api.ok("PUT", "/api/devices/alice-phone/compliance", {"violations": []})
    assert answer["device"]["compliant"] is True
    assert await folder_sync_status(alice) == "1"
    assert await folder_sync_status(shared) == "1"
    row = await api.ok("GET", "/api/associations/FLIP01/alice")
    assert (row["state"], row["reasons"], row["linked"]) == ("allowed", [], True)
    tablet_ping.cancel()
