"""Fixtures for the data path: a real gateway (TLS) in front of demo backends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from sentry.testing.backend import BackendConfig
from sentry.testing.gateway import DemoGateway, PoolSpec, demo_gateway
from sentry.testing.state import MailboxSpec

MAILBOXES = (
    MailboxSpec("alice", "secret", "alice@example.com", "Alice"),
    MailboxSpec("bob", "secret", "bob@example.com", "Bob"),
    MailboxSpec("shared", "secret", "shared@example.com", "Shared"),
)
GMAIL = (MailboxSpec("carol", "secret", "carol@gmail.example", "Carol"),)


def two_pools() -> dict[str, PoolSpec]:
    return {
        "exchange": PoolSpec("exchange", (BackendConfig("exchange", MAILBOXES),)),
        "gmail": PoolSpec("gmail", (BackendConfig("gmail", GMAIL),)),
    }


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as s:
        yield s


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[DemoGateway]:
    async with demo_gateway(
        tmp_path, two_pools(), routing={"default": "exchange", "users": {"carol": "gmail"}}
    ) as gw:
        yield gw
