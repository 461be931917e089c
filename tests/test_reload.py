"""SIGHUP reload against a running gateway: pools, routing, file preferences,
TLS, all or nothing, without dropping held Pings."""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from pathlib import Path

import aiohttp
import pytest
from structlog.testing import capture_logs

from sentry.certs import certificate_names, make_self_signed, write_pair
from sentry.model import AssociationKey
from sentry.reload import needs_restart, reload_gateway
from sentry.settings import (
    BackendPoolSettings,
    HealthCheckSettings,
    RoutingSettings,
    Settings,
    SettingsError,
    load_settings,
)
from sentry.testing.backend import BackendConfig, start_backend
from sentry.testing.eas_client import EasTestClient
from sentry.testing.gateway import DemoGateway


def _with(settings: Settings, **changes: object) -> Settings:
    return dataclasses.replace(settings, **changes)  # type: ignore[arg-type]


async def test_pools_and_routing_reload_without_dropping_a_held_ping(
    gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    gw = gateway.gateway
    _, ping = await gateway.held_ping(session, "alice", "RELOAD0001")
    async with start_backend(BackendConfig()) as extra:
        old = gw.settings
        exchange = dataclasses.replace(
            old.pools[0], health_check=HealthCheckSettings(interval_seconds=3.0)
        )
        new_pool = BackendPoolSettings("extra", "exchange", (extra.url,))
        routing = RoutingSettings(default="exchange", users={"carol": "gmail", "bob": "extra"})
        new = _with(old, pools=(exchange, old.pools[1], new_pool), routing=routing)
        with capture_logs() as logs:
            result = await reload_gateway(gw, lambda: new)
        assert result.ok and result.polls_ended == 0
        assert "added pool extra" in result.changed and "changed pool exchange" in result.changed
        assert gw.upstreams.pools["exchange"].settings.health_check.interval_seconds == 3.0
        assert gw.state.snapshot.routing.users["bob"] == "extra"
        # (the new pool's first health check may log backend_up meanwhile)
        assert [e["event"] for e in logs if not e["event"].startswith("backend_")] == [
            "config_reloaded"
        ]
        assert not ping.done() and gw.state.longpolls.count() == 1
        gateway.backend("exchange").inject_message("alice", "after the reload", "body")
        answer = await asyncio.wait_for(ping, 30)
        assert (answer.status, answer.text("Status")) == (200, "2")  # changes, not dropped
        bob = EasTestClient(
            session, f"{gateway.url}/Microsoft-Server-ActiveSync", "bob", "secret", "RELOAD0002"
        )
        await bob.provision()
        assert extra.stats.requests[("bob", "Provision")] >= 1


async def test_a_removed_pool_is_gone_but_found_by_name(gateway: DemoGateway) -> None:
    gw = gateway.gateway
    new = _with(gw.settings, pools=gw.settings.pools[:1], routing=RoutingSettings("exchange"))
    result = await reload_gateway(gw, lambda: new)
    assert result.ok and "removed pool gmail" in result.changed
    assert list(gw.upstreams.pools) == ["exchange"]
    assert gw.upstreams.pools["gmail"].name == "gmail"  # a request decided before still finds it
    assert "gmail" not in gw.state.snapshot.pools


async def test_a_held_ping_of_a_removed_route_is_answered(
    gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    gw = gateway.gateway
    _, ping = await gateway.held_ping(session, "carol", "RELOAD0003")
    new = _with(gw.settings, routing=RoutingSettings(default=None))  # nobody is routed
    result = await reload_gateway(gw, lambda: new)
    assert result.ok and result.polls_ended == 1
    answer = await asyncio.wait_for(ping, 30)
    assert answer.text("Status") == "129"
    row = gw.state.snapshot.get(AssociationKey("RELOAD0003", "carol"))
    assert row is not None and "NO_BACKEND" in {r.value for r in row.reasons}


async def test_an_invalid_file_is_logged_and_changes_nothing(
    gateway: DemoGateway, tmp_path: Path
) -> None:
    gw = gateway.gateway
    before = (gw.settings, dict(gw.upstreams.pools), gw.state.snapshot.routing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("pools: [{name: x, type: exchange, servers: ['ftp://nope']}]\n")
    with capture_logs() as logs:
        result = await reload_gateway(gw, lambda: load_settings(bad))
    assert not result.ok and result.error is not None and "pools[0].servers[0]" in result.error
    assert [(e["event"], e["log_level"]) for e in logs] == [("reload_failed", "error")]
    assert (gw.settings, dict(gw.upstreams.pools), gw.state.snapshot.routing) == before


async def test_unreadable_certificate_fails_the_reload(gateway: DemoGateway) -> None:
    gw = gateway.gateway
    cert = gw.root / gw.settings.gateway.tls.cert
    cert.write_text("not a certificate")
    result = await reload_gateway(gw, lambda: gw.settings)
    assert not result.ok and result.error is not None
    assert result.error.startswith("gateway.tls.cert: ") and "not a PEM certificate" in result.error


async def test_file_preferences_reload_unless_an_admin_set_them(gateway: DemoGateway) -> None:
    gw = gateway.gateway
    prefs = dataclasses.replace(gw.settings.preferences, max_devices_per_mailbox=3)
    result = await reload_gateway(gw, lambda: _with(gw.settings, preferences=prefs))
    assert result.ok and "preferences" in result.changed
    assert gw.state.snapshot.prefs.max_devices_per_mailbox == 3
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {gw.admin_token}"}
        body = {"max_devices_per_mailbox": 7, "note": "admin decides"}
        async with http.put(f"{gw.admin_url}/api/preferences", json=body, headers=headers) as r:
            assert r.status == 200
    prefs = dataclasses.replace(prefs, max_devices_per_mailbox=5)
    result = await reload_gateway(gw, lambda: _with(gw.settings, preferences=prefs))
    assert result.ok and "preferences" not in result.changed
    assert gw.state.snapshot.prefs.max_devices_per_mailbox == 7  # the admin's value wins


async def test_reload_follows_the_file_for_every_preference_the_admin_did_not_set(
    gateway: DemoGateway,
) -> None:
    gw = gateway.gateway
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {gw.admin_token}"}
        body = {"max_devices_per_mailbox": None, "note": "the default, on purpose"}
        async with http.put(f"{gw.admin_url}/api/preferences", json=body, headers=headers) as r:
            assert r.status == 200
    prefs = dataclasses.replace(
        gw.settings.preferences, max_devices_per_mailbox=5, refusal_style="http403"
    )
    result = await reload_gateway(gw, lambda: _with(gw.settings, preferences=prefs))
    assert result.ok and "preferences" in result.changed
    stored = gw.state.snapshot.prefs
    assert stored.max_devices_per_mailbox is None  # admin-set, even at the default
    assert stored.refusal_style == "http403"  # not admin-set: the file's


async def test_what_needs_a_restart_is_named_and_kept(gateway: DemoGateway) -> None:
    gw = gateway.gateway
    listen = dataclasses.replace(gw.settings.gateway.listen, port=1)
    new = _with(gw.settings, gateway=dataclasses.replace(gw.settings.gateway, listen=listen))
    with capture_logs() as logs:
        result = await reload_gateway(gw, lambda: new)
    assert result.ok and result.needs_restart == ["gateway.listen.port"]
    assert gw.settings.gateway.listen.port == 0  # the running value
    assert {"event": "reload_needs_restart", "keys": ["gateway.listen.port"]}.items() <= logs[
        0
    ].items()


def test_needs_restart_ignores_what_a_reload_applies() -> None:
    old = Settings()
    new = _with(old, routing=RoutingSettings(default=None), pools=())
    assert needs_restart(old, new) == []
    store = dataclasses.replace(old.store, path="elsewhere.db")
    assert needs_restart(old, _with(old, store=store)) == ["store.path"]


async def test_a_new_certificate_is_served_after_reload(gateway: DemoGateway) -> None:
    gw = gateway.gateway
    cert, key = gw.root / gw.settings.gateway.tls.cert, gw.root / gw.settings.gateway.tls.key
    write_pair(make_self_signed("rotated.example"), cert, key, overwrite=True)
    assert (await reload_gateway(gw, lambda: gw.settings)).ok
    names = certificate_names(await _served_certificate(gw.proxy_url))
    assert "rotated.example" in names


async def _served_certificate(url: str):  # type: ignore[no-untyped-def]
    from cryptography import x509

    host, port = url.removeprefix("https://").rsplit(":", 1)
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    _, writer = await asyncio.open_connection(host, int(port), ssl=ctx)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
    return x509.load_der_x509_certificate(der)


def test_settings_error_type_is_what_reload_reports() -> None:
    assert issubclass(SettingsError, ValueError)


async def test_a_store_that_refuses_keeps_routing_and_removed_pools(
    gateway: DemoGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = gateway.gateway

    async def refuse(changes: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(gw.store, "apply", refuse)
    new = _with(gw.settings, pools=gw.settings.pools[:1], routing=RoutingSettings("exchange"))
    with capture_logs() as logs:
        result = await reload_gateway(gw, lambda: new)
    assert not result.ok and result.error == "store: disk full"
    assert [e["event"] for e in logs] == ["reload_failed"]
    assert list(gw.upstreams.pools) == ["exchange", "gmail"]  # still served: still routed
    assert gw.state.snapshot.routing.users == {"carol": "gmail"}
