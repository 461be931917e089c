"""The redirect cache through the admin API and ``sentry admin redirects``: list, filter,
clear one or all (audited), against a gateway whose backend really answered 451."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from admin_support import Api
from structlog.testing import capture_logs

from sentry.cli import main
from sentry.testing.backend import BackendConfig
from sentry.testing.eas_client import EasTestClient
from sentry.testing.gateway import DemoGateway, PoolSpec, demo_gateway

EAS = "/Microsoft-Server-ActiveSync"


@pytest.fixture
async def moved(tmp_path: Path) -> AsyncIterator[DemoGateway]:
    """alice and bob live on exchange2's server; exchange's server redirects them."""
    config = BackendConfig("exchange", require_provisioning=False)
    layout = {
        "exchange": PoolSpec("exchange", (config,)),
        "exchange2": PoolSpec("exchange", (config,)),
    }
    realms = {"realms": [{"name": "example.com", "netbios": ["EXAMPLE"]}]}
    routing = {"default": "exchange"}
    async with demo_gateway(tmp_path, layout, routing=routing, identity=realms) as gw:
        target = gw.backend("exchange2").eas_url
        for user in ("alice", "bob"):
            gw.backend("exchange").move(user, target)
        yield gw


@pytest.fixture
def api(moved: DemoGateway, session: aiohttp.ClientSession) -> Api:
    return Api(session, moved.admin_url, moved.gateway.admin_token)


async def sync(gw: DemoGateway, session: aiohttp.ClientSession, user: str) -> None:
    client = EasTestClient(session, gw.url + EAS, user, "secret", device_id=f"{user}DEV")
    assert (await client.post("Sync", b"")).status == 200


async def test_list_filter_and_clear_through_the_api(
    api: Api, moved: DemoGateway, session: aiohttp.ClientSession
) -> None:
    await sync(moved, session, "alice")
    await sync(moved, session, "bob")
    page = await api.ok("GET", "/api/redirects")
    assert page["total"] == 2
    item = page["items"][0]
    assert (item["pool"], item["target_pool"]) == ("exchange", "exchange2")
    assert item["target"] == moved.backend("exchange2").url
    assert item["cached_at"].endswith("Z") and item["expires_at"] > item["cached_at"]
    # any spelling of one principal: a bare name is not in the realm (no default realm)
    assert (await api.ok("GET", "/api/redirects?user=alice@example.com"))["items"] == []
    only = await api.ok("GET", "/api/redirects?user=ALICE")
    assert [i["user"] for i in only["items"]] == ["alice"]
    assert moved.registry.get_sample_value("sentry_redirect_cache_entries") == 2

    assert await api.ok("DELETE", "/api/redirects/ALICE", {"note": "moved back"}) == {"cleared": 1}
    status, body = await api.delete("/api/redirects/alice", {})
    assert status == 404 and "alice" in body["error"]
    assert await api.ok("DELETE", "/api/redirects", {}) == {"cleared": 1}
    assert (await api.ok("GET", "/api/redirects"))["total"] == 0
    audit = (await api.ok("GET", "/api/audit"))["items"]
    assert [(e["action"], e["target"], e["note"]) for e in audit[:2]] == [
        ("redirects.clear", "*", ""),
        ("redirects.clear", "alice", "moved back"),
    ]
    # Cleared, the next request asks the home server again and is redirected again.
    await sync(moved, session, "alice")
    assert moved.backend("exchange").stats.redirected["alice"] == 2
    assert moved.registry.get_sample_value("sentry_redirect_cache_entries") == 1


@pytest.fixture
def quiet() -> Iterator[None]:
    with capture_logs():  # the gateway's log lines would mix with the CLI's output
        yield


async def test_cli_list_and_clear(
    quiet: None,
    moved: DemoGateway,
    session: aiohttp.ClientSession,
    capsys: pytest.CaptureFixture[str],
) -> None:
    flags = ["--url", moved.admin_url, "--token", moved.gateway.admin_token]

    async def run(*argv: str) -> tuple[int, str]:
        code = await asyncio.to_thread(main, ["admin", "redirects", *argv, *flags])
        out, _ = capsys.readouterr()
        return code, out

    await sync(moved, session, "alice")
    await sync(moved, session, "bob")
    code, out = await run("list")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["USER", "POOL", "TARGET"]
    assert {line.split()[0] for line in lines[1:3]} == {"alice", "bob"}
    assert lines[-1] == "2 cached"
    code, out = await run("list", "--user", "bob", "--json")
    assert code == 0 and [i["user"] for i in json.loads(out)["items"]] == ["bob"]
    code, out = await run("clear", "--user", "bob", "--note", "moved back")
    assert code == 0 and out.strip() == "cleared 1 cached redirect(s)"
    code, _ = await run("clear", "--user", "bob")
    assert code == 1  # nothing cached for bob any more
    code, out = await run("clear")
    assert code == 0 and "cleared 1" in out
