"""sentry.proxy.oauth: signing keys from a file or a URL (a real server on port 0), refreshed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from yarl import URL

from sentry.observability import Metrics
from sentry.proxy.oauth import JwksError, JwksSource
from sentry.settings import OAuthSettings, SettingsError
from sentry.testing.faulty import CuttableProxy
from sentry.testing.oauth import JwksServer, TokenIssuer, serve_jwks


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def value(metrics: Metrics, result: str) -> float:
    got = metrics.registry.get_sample_value("sentry_jwks_refreshes_total", {"result": result})
    return got or 0.0


@pytest.fixture
def issuer() -> TokenIssuer:
    return TokenIssuer()


@pytest.fixture
async def server(issuer: TokenIssuer) -> AsyncIterator[JwksServer]:
    running = await serve_jwks(issuer)
    yield running
    await running.stop()


def settings(issuer: TokenIssuer, **source: object) -> OAuthSettings:
    base = issuer.settings(**source)
    return OAuthSettings(
        issuer=base["issuer"],
        audience=tuple(base["audience"]),
        algorithms=tuple(base["algorithms"]),
        jwks_min_refresh_seconds=60,
        **source,  # type: ignore[arg-type]
    )


async def test_keys_from_a_file_and_a_bad_file_stops_start(
    tmp_path: Path, issuer: TokenIssuer
) -> None:
    (tmp_path / "jwks.json").write_bytes(issuer.jwks_bytes())
    source = JwksSource(
        settings(issuer, jwks_file="jwks.json"), Metrics(CollectorRegistry()), root=tmp_path
    )
    await source.start()
    try:
        assert source.keys is not None and source.keys.kids == {"key-1"}
    finally:
        await source.close()
    (tmp_path / "bad.json").write_text("{not json")
    for name in ("bad.json", "missing.json"):
        bad = JwksSource(
            settings(issuer, jwks_file=name), Metrics(CollectorRegistry()), root=tmp_path
        )
        with pytest.raises(JwksError, match=r"identity\.oauth\.jwks_file") as caught:
            await bad.start()
        assert isinstance(caught.value, SettingsError)
        await bad.close()


async def test_file_rotation_is_picked_up_and_a_broken_file_keeps_the_last_keys(
    tmp_path: Path, issuer: TokenIssuer
) -> None:
    path = tmp_path / "jwks.json"
    path.write_bytes(issuer.jwks_bytes())
    clock, metrics = Clock(), Metrics(CollectorRegistry())
    source = JwksSource(settings(issuer, jwks_file=str(path)), metrics, monotonic=clock)
    await source.start()
    try:
        issuer.rotate("key-2")
        path.write_bytes(issuer.jwks_bytes())
        assert not await source.refresh()  # rate-limited: within a minute of the last load
        assert value(metrics, "rate_limited") == 1
        clock.now += 61
        assert await source.refresh()
        assert source.keys is not None and source.keys.kids == {"key-1", "key-2"}
        path.write_text("garbage")
        clock.now += 61
        assert not await source.refresh()
        assert source.keys.kids == {"key-1", "key-2"}  # the last good keys stay
        assert value(metrics, "error") == 1
        path.unlink()
        assert not await source.refresh(force=True)
        assert source.keys.kids == {"key-1", "key-2"}
    finally:
        await source.close()


async def test_keys_from_a_url_with_single_flight_and_rate_limited_refresh(
    issuer: TokenIssuer, server: JwksServer
) -> None:
    clock, metrics = Clock(), Metrics(CollectorRegistry())
    source = JwksSource(settings(issuer, jwks_url=server.url), metrics, monotonic=clock)
    await source.start()
    try:
        assert server.fetches == 1 and source.keys is not None
        clock.now += 61
        results = await asyncio.gather(*(source.refresh() for _ in range(20)))
        assert server.fetches == 2  # twenty callers, one fetch
        assert all(results)
        results = await asyncio.gather(*(source.refresh() for _ in range(20)))
        assert server.fetches == 2 and not any(results)  # rate-limited
        assert metrics.registry.get_sample_value("sentry_jwks_keys") == 1
    finally:
        await source.close()


async def test_an_unreachable_url_does_not_stop_start_and_is_retried(
    issuer: TokenIssuer, server: JwksServer
) -> None:
    server.fail = True
    clock = Clock()
    source = JwksSource(
        settings(issuer, jwks_url=server.url), Metrics(CollectorRegistry()), monotonic=clock
    )
    await source.start()
    try:
        assert source.keys is None
        server.fail = False
        clock.now += 61
        assert await source.refresh()
        assert source.keys is not None
    finally:
        await source.close()


async def test_a_jwks_that_arrives_in_pieces_is_read_whole(
    issuer: TokenIssuer, server: JwksServer
) -> None:
    """The JWKS reaches the gateway 64 bytes at a time (a key set bigger than
    one TCP segment): every key is loaded, where one read took the first piece."""
    url = URL(server.url)
    proxy = CuttableProxy(url.host or "127.0.0.1", url.port or 80, dribble=(64, 0.002))
    try:
        through = str(url.with_host(proxy.host).with_port(proxy.port))
        source = JwksSource(settings(issuer, jwks_url=through), Metrics(CollectorRegistry()))
        await source.start()
        try:
            assert source.keys is not None and source.keys.kids == {"key-1"}
        finally:
            await source.close()
    finally:
        proxy.close()
