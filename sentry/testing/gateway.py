"""A whole gateway in front of demo backends, for tests, bench/ and the demo.

``demo_gateway`` starts one demo backend per pool (each on a free port), writes
settings that point the pools at them (gateway and admin on free ports too,
TLS with a fresh self-signed certificate unless disabled), starts the gateway
and yields handles to all of it; on exit it stops everything it started.

The demo layout (``demo_pools``): alice, bob and shared on the exchange pool,
carol on the gmail-type pool. With ``DEMO_IDENTITY`` and
``DEMO_REALM_ROUTING`` (what ``make run`` uses) alice, bob and shared are in
the realm example.com (NetBIOS EXAMPLE, the realm of bare names: ``alice``,
``EXAMPLE\\alice`` and ``alice@example.com`` are one principal) and carol is
``carol@gmail.example``, in the realm gmail.example routed to the gmail pool.
``DEMO_ROUTING`` is the realm-less routing (carol by her bare name).

The periodic last-seen flush is off unless a test asks for it
(``touch_flush_seconds``; a test writes pending last-seen times with
``gateway.state.flush_touches()``), so a store write a test observes is one
the test caused, however slowly the machine runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry

from sentry.app import Gateway, start_gateway
from sentry.settings import settings_from_mapping

from .backend import RunningBackend, start_backend
from .eas_client import EasResponse, EasTestClient
from .state import BackendConfig, MailboxSpec

__all__ = [
    "DEMO_IDENTITY",
    "DEMO_REALM_ROUTING",
    "DEMO_ROUTING",
    "RELAXED_CLOCKS",
    "DemoGateway",
    "PoolSpec",
    "demo_gateway",
    "demo_pools",
    "recording_gateway",
]

EXCHANGE_MAILBOXES = (
    MailboxSpec("alice", "secret", "alice@example.com", "Alice"),
    MailboxSpec("bob", "secret", "bob@example.com", "Bob"),
    MailboxSpec("shared", "secret", "shared@example.com", "Shared"),
)
GMAIL_MAILBOXES = (MailboxSpec("carol", "secret", "carol@gmail.example", "Carol"),)
DEMO_ROUTING = {"default": "exchange", "users": {"carol": "gmail"}}
DEMO_IDENTITY = {
    "realms": [
        {"name": "example.com", "netbios": ["EXAMPLE"]},
        {"name": "gmail.example"},
    ],
    "default_realm": "example.com",
}
DEMO_REALM_ROUTING = {"default": "exchange", "domains": {"gmail.example": "gmail"}}


@dataclass(frozen=True)
class PoolSpec:
    """A pool of demo backends: its type and one config per server."""

    type: str = "exchange"
    backends: tuple[BackendConfig, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)  # more pool settings


@dataclass
class DemoGateway:
    """The running gateway and its demo backends, by pool name."""

    gateway: Gateway
    backends: dict[str, list[RunningBackend]]
    registry: CollectorRegistry

    @property
    def url(self) -> str:
        return self.gateway.proxy_url

    @property
    def admin_url(self) -> str:
        return self.gateway.admin_url

    def backend(self, pool: str, index: int = 0) -> RunningBackend:
        return self.backends[pool][index]

    def sample(self, name: str, **labels: str) -> float:
        """A metric sample of the gateway's registry (0 when it has none yet)."""
        return self.registry.get_sample_value(name, labels) or 0.0

    def timeouts(self, phase: str, listener: str = "devices") -> float:
        """``sentry_connection_timeouts_total`` of one phase."""
        return self.sample("sentry_connection_timeouts_total", listener=listener, phase=phase)

    async def until(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``condition()`` holds (TimeoutError after ``timeout``
        seconds: a hang guard, not a speed check)."""
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.01)

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until every pool has a server that passed a health check
        (what ``/readyz`` waits for; TimeoutError after ``timeout`` seconds)."""
        pools = self.gateway.upstreams.pools.values()
        async with asyncio.timeout(timeout):
            while any(p.not_ready() for p in pools):
                await asyncio.sleep(0.005)

    async def held_ping(
        self,
        session: aiohttp.ClientSession,
        user: str,
        device_id: str,
        *,
        heartbeat: int = 600,
        password: str = "secret",
    ) -> tuple[EasTestClient, asyncio.Future[EasResponse]]:
        """The one held-Ping helper: provision ``user`` on ``device_id``, then
        leave a Ping (``heartbeat`` seconds, one folder) held through the
        gateway; return the client and the Ping's answer to come. A test
        proving "at once" asks for a long heartbeat and waits only for this."""
        url = f"{self.url}/Microsoft-Server-ActiveSync"
        client = EasTestClient(session, url, user, password, device_id=device_id)
        await client.provision()
        before = self.gateway.state.longpolls.count()
        xml = (
            f'<Ping xmlns="Ping"><HeartbeatInterval>{heartbeat}</HeartbeatInterval><Folders>'
            "<Folder><Id>1</Id><Class>Email</Class></Folder></Folders></Ping>"
        )
        ping = asyncio.ensure_future(client.post("Ping", xml, timeout=60))
        await self.wait_held(before + 1)
        return client, ping

    async def wait_held(self, count: int = 1, timeout: float = 10.0) -> None:
        """Wait until the gateway holds at least ``count`` long polls upstream
        (TimeoutError after ``timeout`` seconds: a hang guard, not a speed check)."""
        async with asyncio.timeout(timeout):
            while self.gateway.state.longpolls.count() < count:
                await asyncio.sleep(0.005)


def demo_pools(exchange_servers: int = 1) -> dict[str, PoolSpec]:
    """The demo layout: an exchange pool (alice, bob, shared) and a gmail-type
    pool (carol); route them with ``DEMO_ROUTING``."""
    exchange = tuple(BackendConfig("exchange", EXCHANGE_MAILBOXES) for _ in range(exchange_servers))
    return {
        "exchange": PoolSpec("exchange", exchange),
        "gmail": PoolSpec("gmail", (BackendConfig("gmail", GMAIL_MAILBOXES),)),
    }


def _settings(
    root: Path,
    backends: Mapping[str, list[RunningBackend]],
    pools: Mapping[str, PoolSpec],
    overrides: Mapping[str, Any],
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "gateway": {"listen": {"host": "127.0.0.1", "port": 0}, "tls": {"enabled": True}},
        "admin": {"listen": {"host": "127.0.0.1", "port": 0}, "token_file": "admin-token"},
        "store": {"kind": "sqlite", "path": "sentry.db"},
        "logging": {"level": "info", "format": "json"},
        "pools": [
            {
                "name": name,
                "type": spec.type,
                "servers": [b.url for b in backends[name]],
                **dict(spec.extra),
            }
            for name, spec in pools.items()
        ],
        "routing": {"default": next(iter(pools), None)},
    }
    for section, values in overrides.items():
        if isinstance(values, Mapping) and isinstance(data.get(section), dict):
            data[section] = {**data[section], **values}
        else:
            data[section] = values
    return data


RELAXED_CLOCKS = {
    "header_timeout_seconds": 5.0,
    "idle_timeout_seconds": 5.0,
    "body_timeout_seconds": 5.0,
    "send_timeout_seconds": 5.0,
}
"""Every connection clock generous (``recording_gateway``), so only the one a
test makes tiny can close a connection (a loaded machine never cuts a
request the test means to succeed)."""


def recording_gateway(
    tmp_path: Path, backend_url: str, *, tls: bool, **connections: Any
) -> AbstractAsyncContextManager[DemoGateway]:
    """``demo_gateway`` with one pool, ``exchange``, on ``backend_url`` (a
    recording backend), TLS on or off, ``RELAXED_CLOCKS`` and then
    ``connections`` as ``gateway.connections``."""
    pools = {"exchange": PoolSpec("exchange", extra={"servers": [backend_url]})}
    gateway = {"tls": {"enabled": tls}, "connections": {**RELAXED_CLOCKS, **connections}}
    return demo_gateway(tmp_path, pools, gateway=gateway)


@asynccontextmanager
async def demo_gateway(
    root: Path,
    pools: Mapping[str, PoolSpec] | None = None,
    *,
    touch_flush_seconds: float | None = None,
    **overrides: Any,
) -> AsyncIterator[DemoGateway]:
    """Start backends and a gateway under ``root``; keyword sections override
    settings (e.g. ``routing={...}``, ``preferences={...}``, ``gateway={...}``).
    ``touch_flush_seconds`` turns the periodic last-seen flush on (off: None)."""
    pools = pools or {"exchange": PoolSpec("exchange", (BackendConfig(),))}
    started: dict[str, list[RunningBackend]] = {}
    try:
        for name, spec in pools.items():
            default = () if "servers" in spec.extra else (BackendConfig(backend_type=spec.type),)
            configs = spec.backends or default
            started[name] = [await start_backend(c) for c in configs]
        if touch_flush_seconds is not None:
            store = {**overrides.get("store", {}), "touch_flush_seconds": touch_flush_seconds}
            overrides = {**overrides, "store": store}
        settings = settings_from_mapping(_settings(root, started, pools, overrides))
        registry = CollectorRegistry()
        gw = await start_gateway(
            settings, registry=registry, root=root, touch_flush=touch_flush_seconds is not None
        )
        try:
            yield DemoGateway(gw, started, registry)
        finally:
            await gw.stop()
    finally:
        for backends in started.values():
            for b in backends:
                await b.stop()
