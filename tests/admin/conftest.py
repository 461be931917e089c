"""Fixtures for the admin API: a real gateway (TLS) in front of demo backends,
and the JSON client of ``admin_support``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from admin_support import Api

from sentry.testing.gateway import DEMO_ROUTING, DemoGateway, demo_gateway, demo_pools


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(ssl=False, limit=0)
    async with aiohttp.ClientSession(connector=connector) as s:
        yield s


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[DemoGateway]:
    async with demo_gateway(tmp_path, demo_pools(), routing=DEMO_ROUTING) as gw:
        yield gw


@pytest.fixture
def api(gateway: DemoGateway, session: aiohttp.ClientSession) -> Api:
    return Api(session, gateway.admin_url, gateway.gateway.admin_token)
