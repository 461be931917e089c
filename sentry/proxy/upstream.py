"""Backend pools: one aiohttp client session per pool, server choice, health.

Each pool keeps its servers in order with a health flag. ``pick`` returns the
next healthy server round-robin; ``send`` tries servers in turn and fails over
only on errors raised *before* the request was sent (connect errors), since a
request the backend may have seen must never be replayed. A connect failure
marks the server down at once (passive check); a periodic OPTIONS probe
(active check) marks it up again, or down after ``failures_to_down`` misses
(the rules and the reasons are in ``health.py``). Each change of a server's
state is logged once (``backend_down`` with the reason, ``backend_up``) and
counted; ``not_ready`` says why a pool cannot serve yet (no server has passed
a check). No healthy server -> ``NoHealthyServer`` (503 with Retry-After).

Sessions are created with ``auto_decompress=False`` so bodies pass through
byte for byte, and with no total timeout: long polls set a per-request read
timeout above the requested heartbeat instead.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import aiohttp
import structlog
from multidict import CIMultiDict
from yarl import URL

from sentry.aio import create_task
from sentry.observability import Metrics
from sentry.settings import BackendPoolSettings

from .errors import NoHealthyServer, UpstreamConnectError, map_client_errors
from .health import Failure, ServerHealth, State, Transition, bad_status, classify

__all__ = ["BackendPool", "Server", "Upstreams"]

EAS_PATH = "/Microsoft-Server-ActiveSync"
log = structlog.get_logger("sentry.upstream")


@dataclass(eq=False)
class Server:
    """One backend server of a pool and what the gateway believes of its health."""

    url: URL
    health: ServerHealth = field(default_factory=ServerHealth)

    @property
    def label(self) -> str:
        """The URL as shown in logs, metrics and the API: never with credentials."""
        return str(self.url.with_user(None))

    @property
    def healthy(self) -> bool:
        """Requests may go to it (up, or not checked yet)."""
        return self.health.routable

    @property
    def failures(self) -> int:
        return self.health.failures


@dataclass(eq=False)
class BackendPool:
    """A named pool of equivalent backend servers of one type."""

    settings: BackendPoolSettings
    metrics: Metrics
    servers: list[Server] = field(default_factory=list)
    session: aiohttp.ClientSession | None = None
    clock: Callable[[], float] = time.time
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

    def observe(self, server: Server, failure: Failure | None, *, active: bool = True) -> None:
        """Record a health observation (``failure`` None: it worked); log and
        count a change of state, and publish the gauges."""
        if failure is not None and active:
            self.metrics.check_failures.labels(self.name, failure.kind).inc()
        hc = self.settings.health_check
        change = server.health.observe(
            failure, self.clock(), failures_to_down=hc.failures_to_down, active=active
        )
        if change is not None:
            self._announce(server, change, active)
        self.publish(server)

    def _announce(self, server: Server, change: Transition, active: bool) -> None:
        where = {"pool": self.name, "server": server.label, "previous": change.before.value}
        if change.after is State.DOWN and change.failure is not None:
            self.metrics.marked_down.labels(self.name, change.failure.kind).inc()
            log.warning(
                "backend_down",
                **where,
                reason=change.failure.kind,
                detail=change.failure.detail,
                failures=server.failures,
                check="active" if active else "passive",
            )
        elif change.after is State.UP:
            down = change.seconds_before if change.before is State.DOWN else None
            log.info("backend_up", **where, down_seconds=down)

    def publish(self, server: Server) -> None:
        """Set the server's and the pool's health gauges."""
        self.metrics.server_up.labels(self.name, server.label).set(1 if server.healthy else 0)
        self.metrics.pool_healthy.labels(self.name).set(sum(s.healthy for s in self.servers))

    def not_ready(self) -> list[str]:
        """Why the pool cannot serve yet: no server has passed a check (empty: ready)."""
        if any(s.health.state is State.UP for s in self.servers):
            return []
        if any(s.health.state is State.UNKNOWN for s in self.servers):
            return [f"pool {self.name}: waiting for the first health check"]
        why = "; ".join(
            f"{s.label}: {s.health.failure.detail if s.health.failure else 'down'}"
            for s in self.servers
        )
        return [f"pool {self.name}: no healthy server ({why})"]

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
                        skip_auto_headers=("User-Agent",),
                    )
            except UpstreamConnectError as exc:
                self.metrics.upstream_errors.labels(self.name, exc.kind).inc()
                cause = exc.__cause__ or exc
                self.observe(server, classify(cause), active=False)
                if getattr(body, "started", False):
                    raise
                continue
            return server, resp
        raise NoHealthyServer(self.name, self.settings.retry_after_seconds)

    async def probe(self, server: Server) -> Failure | None:
        """Active health check: an OPTIONS request to the EAS endpoint (any
        answer below 500 is a live server; None: it passed)."""
        assert self.session is not None
        hc = self.settings.health_check
        try:
            async with self.session.options(
                server.url.join(URL(EAS_PATH)),
                timeout=aiohttp.ClientTimeout(total=hc.timeout_seconds),
            ) as resp:
                return bad_status(resp.status) if resp.status >= 500 else None
        except (TimeoutError, aiohttp.ClientError) as exc:
            return classify(exc)

    async def health_loop(self) -> None:
        """Probe every server each interval (the first round at once)."""
        while True:
            servers = list(self.servers)
            results = await asyncio.gather(*(self.probe(s) for s in servers))
            for server, failure in zip(servers, results, strict=True):
                self.observe(server, failure)
            await asyncio.sleep(self.settings.health_check.interval_seconds)


class Upstreams:
    """All backend pools, their sessions and health-check tasks."""

    def __init__(
        self,
        pools: tuple[BackendPoolSettings, ...],
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pools: dict[str, BackendPool] = {}
        for p in pools:
            servers = [Server(URL(u)) for u in p.servers]
            self.pools[p.name] = BackendPool(p, metrics, servers, clock=clock)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, *, health_checks: bool = True) -> None:
        """Open one session per pool and start the active health checks
        (without them every server is taken as up)."""
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
                if not health_checks:
                    server.health.observe(None, pool.clock(), failures_to_down=1, active=False)
                pool.publish(server)
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
