"""Backend health as an operator reads it: ``GET /api/pools`` (state, reason,
since when, last check), ``sentry admin pools`` and ``/readyz``, which is not
ready until every pool has a server that passed a health check."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from admin_support import Api
from structlog.testing import capture_logs

from sentry.cli import main
from sentry.testing.backend import BackendConfig, start_backend
from sentry.testing.faulty import refusing_port, silent_backend, status_backend, url_of
from sentry.testing.gateway import DemoGateway, PoolSpec, demo_gateway

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
FAST = {"interval_seconds": 0.05, "timeout_seconds": 2}


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for ``condition()`` (a hang guard of 10 s, not a speed check)."""
    try:
        async with asyncio.timeout(10):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"never happened: {what}") from None


async def readyz(session: aiohttp.ClientSession, gw: DemoGateway) -> tuple[int, Any]:
    async with session.get(f"{gw.admin_url}/readyz") as r:
        return r.status, await r.json()


@pytest.fixture
async def mixed(tmp_path: Path) -> AsyncIterator[tuple[DemoGateway, str, str]]:
    """exchange: a live demo backend and a closed port; gmail: a server answering 500."""
    async with AsyncExitStack() as stack:
        live = await stack.enter_async_context(start_backend(BackendConfig()))
        dead = url_of(stack.enter_context(refusing_port()))
        broken = await stack.enter_async_context(status_backend(500))
        pools = {
            "exchange": PoolSpec(extra={"servers": [live.url, dead], "health_check": FAST}),
            "gmail": PoolSpec("gmail", extra={"servers": [broken.url], "health_check": FAST}),
        }
        stack.enter_context(capture_logs())  # keep the gateway's lines out of the CLI output
        gw = await stack.enter_async_context(demo_gateway(tmp_path, pools))
        yield gw, dead, broken.url


async def test_pools_show_state_reason_and_times(
    mixed: tuple[DemoGateway, str, str], session: aiohttp.ClientSession
) -> None:
    gw, dead, broken = mixed
    api = Api(session, gw.admin_url, gw.gateway.admin_token)
    pools = gw.gateway.upstreams.pools
    await until(lambda: not pools["exchange"].not_ready(), "exchange passed a check")
    await until(lambda: not pools["gmail"].servers[0].healthy, "gmail's server is down")
    await until(lambda: not pools["exchange"].servers[1].healthy, "the closed port is down")
    answer = await api.ok("GET", "/api/pools")
    exchange, gmail = answer["items"]
    assert (exchange["ready"], exchange["healthy"], gmail["ready"], gmail["healthy"]) == (
        True,
        1,
        False,
        0,
    )
    up, down = exchange["servers"]
    assert (up["state"], up["reason"], up["detail"]) == ("up", None, None)
    assert (down["url"], down["state"], down["healthy"]) == (dead, "down", False)
    assert (down["reason"], down["detail"]) == ("refused", "connection refused")
    assert ISO.match(down["since"]) and ISO.match(down["last_check"])
    (server,) = gmail["servers"]
    assert (server["reason"], server["detail"]) == ("bad_status", "answered HTTP 500")

    status, body = await readyz(session, gw)
    assert status == 503
    assert body["problems"] == [f"pool gmail: no healthy server ({broken}: answered HTTP 500)"]


async def test_the_cli_shows_why_a_server_is_down(
    mixed: tuple[DemoGateway, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    gw, dead, _ = mixed
    pools = gw.gateway.upstreams.pools
    await until(lambda: not pools["gmail"].servers[0].healthy, "gmail's server is down")
    await until(lambda: not pools["exchange"].servers[1].healthy, "the closed port is down")
    argv = ["admin", "pools", "--url", gw.admin_url, "--token", gw.gateway.admin_token]
    assert await asyncio.to_thread(main, argv) == 0
    out = capsys.readouterr().out
    header, *rows = out.splitlines()
    assert header.split()[:4] == ["POOL", "TYPE", "SERVER", "STATE"]
    assert any(dead in r and " down " in r and r.endswith("connection refused") for r in rows)
    assert any("gmail" in r and r.endswith("answered HTTP 500") for r in rows)
    assert "not ready (no server up yet): gmail" in out


async def test_readyz_waits_for_the_first_health_check(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    slow = {"interval_seconds": 60, "timeout_seconds": 60}  # the first check cannot end here
    async with silent_backend() as hung:
        pools = {"exchange": PoolSpec(extra={"servers": [hung.url], "health_check": slow})}
        async with demo_gateway(tmp_path, pools) as gw:
            await until(lambda: hung.accepted >= 1, "the first check is under way")
            status, body = await readyz(session, gw)
            assert (status, body["problems"]) == (
                503,
                ["pool exchange: waiting for the first health check"],
            )
            api = Api(session, gw.admin_url, gw.gateway.admin_token)
            (server,) = (await api.ok("GET", "/api/pools"))["items"][0]["servers"]
            assert (server["state"], server["healthy"], server["last_check"]) == (
                "unknown",
                True,  # requests may still try it
                None,
            )


async def test_readyz_is_ready_once_every_pool_passed_a_check(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    async with demo_gateway(tmp_path) as gw:
        await gw.wait_ready()
        assert await readyz(session, gw) == (200, {"status": "ready"})
