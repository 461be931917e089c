"""Fixtures for the data path: a real gateway (TLS) in front of demo backends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from sentry.testing.gateway import DEMO_ROUTING, DemoGateway, demo_gateway, demo_pools


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as s:
        yield s


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[DemoGateway]:
    async with demo_gateway(tmp_path, demo_pools(), routing=DEMO_ROUTING) as gw:
        yield gw
