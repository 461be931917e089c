"""Console pages for the identity and store features: verified/throwaway rows,
the established backend type and its reset, the state store's health and its
recovery; each one the API's own route."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from console_support import first_contact, phone

from sentry.testing.console import ConsoleClient, console_session
from sentry.testing.gateway import DEMO_ROUTING, demo_gateway, demo_pools


async def _api(gateway, session, method: str, path: str, body=None):
    headers = {"Authorization": f"Bearer {gateway.gateway.admin_token}"}
    async with session.request(method, gateway.admin_url + path, json=body, headers=headers) as r:
        return r.status, await r.json()


async def test_unverified_and_verified_rows(gateway, session, console: ConsoleClient):
    assert not await first_contact(phone(gateway, session, "bob", "BOBPHONE2"))
    page = await console.get("/", verified="false")
    assert "BOBPHONE2" in page.text and ">unverified</span>" in page.text
    assert "No association matches." in (await console.get("/", verified="true")).text
    detail = await console.get("/associations/BOBPHONE2/bob")
    assert "no (the backend never accepted it)" in detail.text


async def test_reset_the_backend_type_of_a_device_id(tmp_path: Path, session):
    async with demo_gateway(tmp_path, demo_pools(), routing=DEMO_ROUTING) as gw:
        alice = phone(gw, session, "alice", "PHONE1")
        assert await first_contact(alice)  # verified: the DeviceId is now exchange-type
        async with console_session() as jar:
            console = ConsoleClient(jar, gw.admin_url)
            await console.sign_in(gw.gateway.admin_token, "Ada")
            row = "/associations/PHONE1/alice"
            page = await console.get(row)
            assert "eas:PHONE1" in page.text and 'id="reset-backend-type"' in page.text
            assert '<option value="gmail">gmail</option>' in page.text
            fields = {"scope": "eas:PHONE1", "backend_type": "gmail", "note": "moving", "back": row}
            done = await console.post("/reset-backend-type", fields)
            assert done.status == 303 and done.location == row
            shown = await console.get(row)
            assert "Backend type of eas:PHONE1 reset: gmail." in shown.text
            _, types = await _api(gw, session, "GET", "/api/backend-types")
            assert [(e["scope"], e["backend_type"]) for e in types["items"]] == [
                ("eas:PHONE1", "gmail")
            ]
            _, audit = await _api(gw, session, "GET", "/api/audit")
            assert audit["items"][0]["actor"] == "Ada" and audit["items"][0]["note"] == "moving"
            refused = await console.post("/reset-backend-type", {**fields, "backend_type": "x"})
            assert refused.status == 303
            assert "Refused (409)" in (await console.get(row)).text


async def test_store_health_and_recovery(tmp_path: Path, session):
    store = {"check_interval_seconds": 0.02}
    async with demo_gateway(tmp_path, demo_pools(), routing=DEMO_ROUTING, store=store) as gw:
        assert await first_contact(phone(gw, session, "alice", "PHONE1"))
        async with console_session() as jar:
            console = ConsoleClient(jar, gw.admin_url)
            await console.sign_in(gw.gateway.admin_token, "Ada")
            healthy = await console.get("/pools")
            assert 'id="store"' in healthy.text and ">healthy</span>" in healthy.text
            for suffix in ("", "-wal", "-shm"):
                os.remove(f"{tmp_path / 'sentry.db'}{suffix}")
            async with asyncio.timeout(10):
                while (await _api(gw, session, "GET", "/api/store"))[1]["healthy"]:
                    await asyncio.sleep(0.01)
            page = await console.get("/pools")
            assert ">deleted</span>" in page.text and "/store/recover" in page.text
            blocked = await console.post(
                "/associations/PHONE1/alice/act", {"action": "block", "note": "lost"}
            )
            assert blocked.status == 303
            shown = await console.get("/associations/PHONE1/alice")
            assert "Refused (503)" in shown.text and "nothing was changed" in shown.text
            done = await console.post("/store/recover", {"note": "deleted by mistake"})
            assert done.status == 303
            assert "State store recovered: healthy." in (await console.get("/pools")).text
