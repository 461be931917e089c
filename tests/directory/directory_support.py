"""Helpers for the directory sync tests: the seeded people, the gateway settings
pointing at a test slapd, and a small admin API client."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from sentry.testing.eas_client import EasTestClient
from sentry.testing.gateway import (
    DEMO_IDENTITY,
    DEMO_REALM_ROUTING,
    DemoGateway,
    demo_gateway,
    demo_pools,
)
from sentry.testing.slapd import Slapd, person_ldif

PEOPLE = "".join(
    [
        person_ldif(
            "alice",
            upn="alice@example.com",
            mail="alice@example.com",
            display="Alice Smith",
            proxies=["SMTP:alice@example.com", "smtp:a.smith@example.com", "X500:/o=Example/cn=a"],
            ext1="shared",
            ext2="shared@example.com",
        ),
        person_ldif("bob", upn="bob@example.com", mail="bob@example.com", display="Bob"),
        person_ldif("shared", upn="shared@example.com", mail="shared@example.com"),
    ]
)


def ldap_settings(slapd: Slapd, root: Path, **over: Any) -> dict[str, Any]:
    """``directory.ldap`` for ``slapd`` (over its unix socket unless ``urls`` is
    given), with the password in a 0600 file under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    pw = root / "ldap-password"
    pw.write_text(slapd.password + "\n")
    os.chmod(pw, 0o600)
    return {
        "urls": [slapd.ldapi_url],
        "bind_dn": slapd.bind_dn,
        "bind_password_file": str(pw),
        "base_dn": slapd.base_dn,
        "filter": "(objectClass=inetOrgPerson)",
        "ca_file": str(slapd.ca_file),
        "sync_interval_seconds": 0,
        "attributes": {"custom1": "extensionAttribute1", "custom2": "extensionAttribute2"},
        **over,
    }


@asynccontextmanager
async def ldap_gateway(
    root: Path, slapd: Slapd, *, preferences: dict[str, Any] | None = None, **over: Any
) -> AsyncIterator[DemoGateway]:
    """The demo gateway (realm example.com) syncing from ``slapd``."""
    async with demo_gateway(
        root,
        demo_pools(),
        identity=DEMO_IDENTITY,
        routing=DEMO_REALM_ROUTING,
        directory={"ldap": ldap_settings(slapd, root, **over)},
        preferences=preferences or {},
    ) as gw:
        yield gw


class Api:
    """JSON calls to the admin API of ``gw``."""

    def __init__(self, gw: DemoGateway, session: aiohttp.ClientSession) -> None:
        self.base, self.session = gw.admin_url, session
        self.headers = {"Authorization": f"Bearer {gw.gateway.admin_token}"}

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        kwargs: dict[str, Any] = {"headers": self.headers}
        if body is not None:
            kwargs["json"] = body
        async with self.session.request(method, self.base + path, **kwargs) as resp:
            return resp.status, await resp.json(content_type=None)

    async def ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        got, answer = await self.call(method, path, body)
        assert got == status, (method, path, got, answer)
        return answer

    async def sync(self, **body: Any) -> Any:
        return await self.ok("POST", "/api/directory/sync", body)

    async def metrics(self) -> str:
        async with self.session.get(self.base + "/metrics") as resp:
            return await resp.text()


FOLDER_SYNC = '<FolderSync xmlns="FolderHierarchy"><SyncKey>0</SyncKey></FolderSync>'


async def folder_sync_status(client: EasTestClient) -> str | None:
    """The FolderSync Status the client gets: "1" forwarded, "129" refused."""
    r = await client.post("FolderSync", FOLDER_SYNC)
    assert r.status == 200, r
    return r.text("Status")
