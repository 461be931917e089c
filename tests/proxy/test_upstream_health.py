"""Passive and active health of backend servers."""

from __future__ import annotations

import asyncio
import socket

from prometheus_client import CollectorRegistry

from sentry.observability import Metrics
from sentry.proxy.upstream import Upstreams
from sentry.settings import BackendPoolSettings, HealthCheckSettings
from sentry.testing.backend import BackendConfig, start_backend


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_active_checks_mark_a_server_down_then_up_again() -> None:
    port = free_port()
    hc = HealthCheckSettings(interval_seconds=0.05, timeout_seconds=1, failures_to_down=2)
    settings = BackendPoolSettings("p", "exchange", (f"http://127.0.0.1:{port}",), hc)
    registry = CollectorRegistry()
    upstreams = Upstreams((settings,), Metrics(registry))
    await upstreams.start()
    server = upstreams.pools["p"].servers[0]
    try:
        while server.healthy:
            await asyncio.sleep(0.02)
        assert (
            registry.get_sample_value(
                "sentry_backend_server_up", {"pool": "p", "server": server.label}
            )
            == 0
        )
        async with start_backend(BackendConfig(), port=port):
            while not server.healthy:
                await asyncio.sleep(0.02)
            assert (
                registry.get_sample_value("sentry_backend_pool_healthy_servers", {"pool": "p"}) == 1
            )
    finally:
        await upstreams.close()
