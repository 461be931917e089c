"""Fixtures for the admin API: a real gateway (TLS) in front of demo backends,
and the JSON client of ``admin_support``."""

from __future__ import annotations

import aiohttp
import pytest
from admin_support import Api

from sentry.testing.gateway import DemoGateway


@pytest.fixture
def api(gateway: DemoGateway, session: aiohttp.ClientSession) -> Api:
    return Api(session, gateway.admin_url, gateway.gateway.admin_token)
