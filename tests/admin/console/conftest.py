"""Fixtures for the web console: a real gateway (device port TLS, admin port
plain HTTP) with auto-block on and a read-only token, and console clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from sentry.testing.console import ConsoleClient, console_session
from sentry.testing.gateway import DEMO_ROUTING, DemoGateway, demo_gateway, demo_pools


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[DemoGateway]:
    async with demo_gateway(
        tmp_path,
        demo_pools(),
        routing=DEMO_ROUTING,
        admin={"readonly_token_file": "readonly-token"},
        preferences={"auto_block_unregistered": True},
    ) as gw:
        yield gw


@pytest.fixture
async def browser_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with console_session() as s:
        yield s


@pytest.fixture
async def console(gateway: DemoGateway, browser_session: aiohttp.ClientSession) -> ConsoleClient:
    """A console client signed in with the admin token as "Ada Admin"."""
    client = ConsoleClient(browser_session, gateway.admin_url)
    page = await client.sign_in(gateway.gateway.admin_token, "Ada Admin")
    assert page.status == 303, page.text
    return client
