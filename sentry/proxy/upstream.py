"""Backend pools: one aiohttp client session per pool, server choice, health.

Each pool keeps its servers in order with a health flag. ``pick`` returns the
next healthy server round-robin; ``send`` tries servers in turn and fails over
only on errors raised *before* the request was sent (connect errors), since a
request the backend may have seen must never be replayed. A connect failure
marks the server down at once (passive check); a periodic OPTIONS probe
(active check) marks it up again, or down after ``failures_to_down`` misses.
No healthy server -> ``NoHealthyServer`` (503 with Retry-After).

Sessions are created with ``auto_decompress=False`` so bodies pass through
byte for byte, and with no total timeout: long polls set a per-request read
timeout above the requested heartbeat instead.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from sentry.aio import create_task
from sentry.observability import Metrics
from sentry.settings import BackendPoolSettings

from .errors import NoHealthyServer, UpstreamConnectError, map_client_errors

__all__ = ["BackendPool", "Server", "Upstreams"]

EAS_PATH = "/Microsoft-Server-ActiveSync"
# The client session adds none of its own headers: the backend sees the
# device's (an added Accept-Encoding would let the backend compress an answer
# the device never asked to be compressed; it is relayed raw).
_NO_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


@dataclass(eq=False)
class Server:
    """One backend server of a pool and what the gateway believes of its health."""

    url: URL
    healthy: bool = True
    failures: int = 0

    @property
    def label(self) -> str:
        return str(self.url)


@dataclass(eq=False)
class BackendPool:
    """A named pool of equivalent backend servers of one type."""

    settings: BackendPoolSettings
    metrics: Metrics
    servers: list[Server] = field(default_factory=list)
    session: aiohttp.ClientSession | None = None
    _rr: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def type(self) -> str:
        return self.settings.type

    def candidates(self) -> list[Server]:
        """Healthy servers, rotated so load spreads round-robin."""
        healthy = [s for s in self.servers if s.healthy]
        if not healthy:
            raise NoHealthyServer(self.name, self.settings.retry_after_seconds)
        start = next(self._rr) % len(healthy)
        return healthy[start:] + healthy[:start]

    def mark(self, server: Server, ok: bool) -> None:
        """Record a health observation and publish it."""
        if ok:
            server.failures = 0
            server.healthy = True
        else:
            server.failures += 1
            server.healthy = False
        self.metrics.server_up.labels(self.name, server.label).set(1 if server.healthy else 0)
        self.metrics.pool_healthy.labels(self.name).set(sum(s.healthy for s in self.servers))

    async def send(
        self,
        method: str,
        path_qs: str,
        headers: Mapping[str, str] | CIMultiDict[str],
        body: object,
        timeout: aiohttp.ClientTimeout,
    ) -> tuple[Server, aiohttp.ClientResponse]:
        """Send the request to a healthy server; return the server and the
        response (headers read, body not yet). The caller releases it.

        When every server refuses the connection the pool has no healthy
        server left: ``NoHealthyServer`` (503 + Retry-After)."""
        assert self.session is not None, "pool not started"
        for server in self.candidates():
            try:
                with map_client_errors(server.label):
                    resp = await self.session.request(
                        method,
                        server.url.join(URL(path_qs)),
                        headers=headers,
                        data=body,
                        timeout=timeout,
                        allow_redirects=False,
                        skip_auto_headers=_NO_AUTO_HEADERS,
                    )
            except UpstreamConnectError as exc:
                self.metrics.upstream_errors.labels(self.name, exc.kind).inc()
                self.mark(server, ok=False)
                if getattr(body, "started", False):
                    raise
                continue
            return server, resp
        raise NoHealthyServer(self.name, self.settings.retry_after_seconds)

    async def probe(self, server: Server) -> bool:
        """Active health check: an OPTIONS request to the EAS endpoint."""
        assert self.session is not None
        hc = self.settings.health_check
        try:
            async with self.session.options(
                server.url.join(URL(EAS_PATH)),
                timeout=aiohttp.ClientTimeout(total=hc.timeout_seconds),
            ) as resp:
                return resp.status < 500
        except (TimeoutError, aiohttp.ClientError):
            return False

    async def health_loop(self) -> None:
        """Probe every server each interval; up on success, down after N misses."""
        hc = self.settings.health_check
        while True:
            results = await asyncio.gather(*(self.probe(s) for s in self.servers))
            for server, ok in zip(self.servers, results, strict=True):
                if ok:
                    self.mark(server, ok=True)
                elif server.failures + 1 >= hc.failures_to_down or not server.healthy:
                    self.mark(server, ok=False)
                else:
                    server.failures += 1
            await asyncio.sleep(hc.interval_seconds)


class Upstreams:
    """All backend pools, their sessions and health-check tasks."""

    def __init__(self, pools: tuple[BackendPoolSettings, ...], metrics: Metrics) -> None:
        self.pools: dict[str, BackendPool] = {}
        for p in pools:
            pool = BackendPool(p, metrics, [Server(URL(u)) for u in p.servers])
            self.pools[p.name] = pool
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, *, health_checks: bool = True) -> None:
        """Open one session per pool and start the active health checks."""
        for pool in self.pools.values():
            connector = aiohttp.TCPConnector(
                limit=0,
                ssl=pool.settings.tls_verify,
                keepalive_timeout=30,
            )
            pool.session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            for server in pool.servers:
                pool.mark(server, ok=True)
            if health_checks:
                self._tasks.append(create_task(pool.health_loop(), name=f"health:{pool.name}"))

    async def close(self) -> None:
        """Stop the health checks and close every session."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for pool in self.pools.values():
            if pool.session is not None:
                await pool.session.close()
