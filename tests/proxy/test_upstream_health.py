"""Passive and active health of backend servers."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from sentry.observability import Metrics
from sentry.proxy.upstream import Upstreams
from sentry.settings import BackendPoolSettings, HealthCheckSettings
from sentry.testing.backend import BackendConfig, start_backend
from sentry.testing.faulty import refusing_port, url_of


async def test_active_checks_mark_a_server_down_then_up_again() -> None:
    with refusing_port() as sock:
        await _down_then_up(sock)


async def _down_then_up(sock):  # type: ignore[no-untyped-def]
    hc = HealthCheckSettings(interval_seconds=0.05, timeout_seconds=1, failures_to_down=2)
    settings = BackendPoolSettings("p", "exchange", (url_of(sock),), hc)
    registry = CollectorRegistry()
    upstreams = Upstreams((settings,), Metrics(registry))
    await upstreams.start()
    server = upstreams.pools["p"].servers[0]
    try:
        async with asyncio.timeout(10):
            while server.healthy:
                await asyncio.sleep(0.02)
        assert (
            registry.get_sample_value(
                "sentry_backend_server_up", {"pool": "p", "server": server.label}
            )
            == 0
        )
        async with start_backend(BackendConfig(), sock=sock), asyncio.timeout(10):
            while not server.healthy:
                await asyncio.sleep(0.02)
            assert (
                registry.get_sample_value("sentry_backend_pool_healthy_servers", {"pool": "p"}) == 1
            )
    finally:
        await upstreams.close()
