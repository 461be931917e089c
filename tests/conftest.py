"""Suite-wide settings that keep the suite deterministic on a loaded machine, and
the real PostgreSQL of the store tests (fixtures in ``sentry.testing.pgfixtures``).

Hypothesis checks wall-clock time in two places: a per-example ``deadline``
(200 ms by default) and the ``too_slow`` health check on data generation. Both
fail a correct test when another process saturates the cores, so the profile
every test inherits turns them off; a slow parser is found by bench/, not here.
Every other Hypothesis setting (examples, randomness, shrinking) is unchanged.

The gateway fixtures every area shares live here once: ``session`` (a client
that accepts the test certificate) and ``gateway`` (a real gateway in front of
the demo backends); a directory overrides them only when it needs another
gateway. A held Ping is ``DemoGateway.held_ping``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from hypothesis import HealthCheck, settings

from sentry.testing.gateway import DEMO_ROUTING, DemoGateway, demo_gateway, demo_pools

pytest_plugins = ("sentry.testing.pgfixtures",)

settings.register_profile("sentry", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("sentry")


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session that accepts the gateway's self-signed test certificate
    (certificate verification is exercised by the TLS tests of their own)."""
    connector = aiohttp.TCPConnector(ssl=False, limit=0)
    async with aiohttp.ClientSession(connector=connector) as s:
        yield s


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[DemoGateway]:
    """A real gateway (device port TLS) in front of the demo backends."""
    async with demo_gateway(tmp_path, demo_pools(), routing=DEMO_ROUTING) as gw:
        yield gw
