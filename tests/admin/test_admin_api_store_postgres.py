"""A gateway on PostgreSQL (``store.kind: postgresql``), seen from outside, with its
server stopped and started again under it: devices get "registry unreachable"
decisions (known ones keep theirs, new ones follow ``new_device_access``), admin
changes get 503 with ``Retry-After``, ``/readyz`` and ``GET /api/store`` say why, and
everything comes back by itself when the server does. Backups are ``pg_dump``'s job."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from admin_support import Api, device, folder_sync_status

from sentry.testing.gateway import DEMO_ROUTING, DemoGateway, demo_gateway, demo_pools
from sentry.testing.pgfixtures import THROWAWAY_PASSWORD
from sentry.testing.postgres import Databases, ThrowawayServer


@asynccontextmanager
async def gateway_on(root: Path, dsn: str, **overrides: Any) -> AsyncIterator[DemoGateway]:
    store = {
        "kind": "postgresql",
        "dsn": dsn,
        "check_interval_seconds": 0.05,
        "connect_timeout_seconds": 2,
    }
    async with demo_gateway(
        root, demo_pools(), routing=DEMO_ROUTING, store=store, **overrides
    ) as gw:
        yield gw


async def readiness(api: Api, *, ready: bool) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while True:
            status, answer = await api.call("GET", "/readyz", token=None)
            if (status == 200) == ready:
                return answer
            await asyncio.sleep(0.02)


async def test_a_stopped_server_degrades_the_gateway_until_it_is_back(
    tmp_path: Path, session: aiohttp.ClientSession, pg_throwaway: ThrowawayServer
) -> None:
    databases = Databases(pg_throwaway.dsn)
    dsn = await databases.create()
    try:
        async with gateway_on(tmp_path, dsn, preferences={"new_device_access": "block"}) as gw:
            api = Api(session, gw.admin_url, gw.gateway.admin_token)
            alice = device(gw, session, "alice", "PHONE1")
            await alice.provision()
            await device(gw, session, "bob", "PHONE2").provision()
            pg_throwaway.stop()

            status, answer = await api.post("/api/associations/PHONE2/bob/block", {"note": "x"})
            assert status == 503, answer
            assert "unreachable" in answer["error"] and "nothing was changed" in answer["error"]
            assert int(api.last_headers["Retry-After"]) >= 1
            assert THROWAWAY_PASSWORD not in answer["error"]
            problems = (await readiness(api, ready=False))["problems"]
            assert any(p.startswith("store unreachable:") for p in problems), problems
            store = await api.ok("GET", "/api/store")
            assert (store["kind"], store["fault"], store["path"]) == (
                "postgresql",
                "unreachable",
                None,
            )

            assert await folder_sync_status(alice) == "1"  # known: keeps its decision
            newcomer = device(gw, session, "shared", "PHONE3")
            assert await folder_sync_status(newcomer) == "129"  # new: follows the preference

            pg_throwaway.start()
            await readiness(api, ready=True)  # no operator action: the probe write succeeds
            await api.ok("POST", "/api/associations/PHONE2/bob/block", {"note": "lost"})
            status, answer = await api.get("/api/store/backup")
            assert status == 409 and "pg_dump" in answer["error"]

        async with gateway_on(tmp_path, dsn) as gw:  # a restart reads it all back
            api = Api(session, gw.admin_url, gw.gateway.admin_token)
            row = await api.ok("GET", "/api/associations/PHONE2/bob")
            assert row["state"] == "blocked" and row["override"]["note"] == "lost"
            assert (await api.ok("GET", "/api/associations"))["total"] == 2
    finally:
        if not pg_throwaway.running:
            pg_throwaway.start()
        await databases.drop_all()
