"""Helpers for the admin tests: a small JSON client for the admin listener and
EAS steps used by several files (fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import aiohttp

from sentry.testing.eas_client import EasResponse, EasTestClient
from sentry.testing.gateway import DemoGateway

_UNSET: Any = object()


@dataclass
class Api:
    """JSON calls to the admin API, with the bearer token unless told otherwise."""

    session: aiohttp.ClientSession
    base: str
    token: str

    async def call(
        self,
        method: str,
        path: str,
        body: Any = _UNSET,
        *,
        token: str | None = _UNSET,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
    ) -> tuple[int, Any]:
        hdrs = dict(headers or {})
        token = self.token if token is _UNSET else token
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        kwargs: dict[str, Any] = {"headers": hdrs}
        if body is not _UNSET:
            kwargs["json"] = body
        elif data is not None:
            kwargs["data"] = data
        async with self.session.request(method, self.base + path, **kwargs) as resp:
            text = await resp.text()
            self.last_headers = dict(resp.headers)
            return resp.status, (await resp.json(content_type=None)) if text else None

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.call("GET", path, **kw)

    async def post(self, path: str, body: Any = _UNSET, **kw: Any) -> tuple[int, Any]:
        return await self.call("POST", path, body, **kw)

    async def put(self, path: str, body: Any = _UNSET, **kw: Any) -> tuple[int, Any]:
        return await self.call("PUT", path, body, **kw)

    async def delete(self, path: str, body: Any = _UNSET, **kw: Any) -> tuple[int, Any]:
        return await self.call("DELETE", path, body, **kw)

    async def ok(self, method: str, path: str, body: Any = _UNSET, status: int = 200) -> Any:
        got, answer = await self.call(method, path, body)
        assert got == status, (method, path, got, answer)
        return answer


def device(
    gw: DemoGateway, session: aiohttp.ClientSession, user: str, device_id: str, **kw: Any
) -> EasTestClient:
    """An EAS client of ``user`` on ``device_id``, through the gateway."""
    url = f"{gw.url}/Microsoft-Server-ActiveSync"
    return EasTestClient(session, url, user, "secret", device_id=device_id, **kw)


FOLDER_SYNC = '<FolderSync xmlns="FolderHierarchy"><SyncKey>0</SyncKey></FolderSync>'


async def folder_sync_status(client: EasTestClient) -> str | None:
    """The FolderSync Status the client gets (None when the answer has no body)."""
    r = await client.post("FolderSync", FOLDER_SYNC)
    assert r.status == 200, r
    return r.text("Status")


PING = (
    '<Ping xmlns="Ping"><HeartbeatInterval>900</HeartbeatInterval><Folders><Folder>'
    "<Id>1</Id><Class>Email</Class></Folder></Folders></Ping>"
)


async def held_ping(
    gw: DemoGateway, session: aiohttp.ClientSession, user: str, device_id: str
) -> tuple[EasTestClient, asyncio.Future[EasResponse]]:
    """Provision ``user`` on ``device_id`` and leave a Ping held through the
    gateway (``DemoGateway.held_ping``, the one helper)."""
    return await gw.held_ping(session, user, device_id, heartbeat=900)
