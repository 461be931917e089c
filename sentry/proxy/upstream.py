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
timeout above the requested heartbeat instead. A request whose body the
gateway holds whole (nearly all of them) goes through the lean client of
``leanclient.py`` instead (one per ``tls_verify`` value, shared by the
pools), with the same timeouts, failover and health observations; streamed
bodies, the gateway's own Provision and the health checks use the session.

``Upstreams.reconfigure`` applies a reloaded pool list (SIGHUP) without
touching requests in flight: a new pool gets a session and a health check; a
changed pool is replaced by a new ``BackendPool`` (servers it keeps keep
their health, its session too unless ``tls_verify`` changed); a removed pool
is no longer listed, but a request decided before the reload still finds it
by name, and its session is closed at shutdown (idle connections expire on
their own). A held Ping keeps the connection it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import aiohttp
import structlog
from multidict import CIMultiDict
from yarl import URL

from sentry.aio import create_task
from sentry.observability import Metrics
from sentry.settings import BackendPoolSettings

from .errors import NoHealthyServer, UpstreamConnectError, UpstreamError, map_client_errors
from .health import Failure, ServerHealth, State, Transition, bad_status, classify
from .leanclient import LeanClient, LeanResponse

# A backend's answer as the relay sees it: aiohttp's, or the lean client's (a body held whole).
Answer = aiohttp.ClientResponse | LeanResponse

__all__ = ["Answer", "BackendPool", "PoolMap", "Server", "Upstreams"]

EAS_PATH = "/Microsoft-Server-ActiveSync"
log = structlog.get_logger("sentry.upstream")
# The client session adds none of its own headers: the backend sees the
# device's (an added Accept-Encoding would let the backend compress an answer
# the device never asked to be compressed; it is relayed raw).
_NO_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


@dataclass(eq=False)
class Server:
    """One backend server of a pool and what the gateway believes of its health."""

    url: URL
    health: ServerHealth = field(default_factory=ServerHealth)

    @property
    def label(self) -> str:
        """The URL as shown in logs, metrics and the API: never with credentials."""
        return _shown(self.url)

    @property
    def healthy(self) -> bool:
        """Requests may go to it (up, or not checked yet)."""
        return self.health.routable

    @property
    def failures(self) -> int:
        return self.health.failures


async def _mapped(server: str, answer: Awaitable[Answer]) -> Answer:
    """``answer`` awaited with aiohttp's errors mapped to the data path's."""
    with map_client_errors(server):
        return await answer


@functools.lru_cache(maxsize=256)
def _shown(url: URL) -> str:
    """``url`` without credentials (remembered: every request shows its server's)."""
    return str(url.with_user(None))


@dataclass(eq=False)
class BackendPool:
    """A named pool of equivalent backend servers of one type."""

    settings: BackendPoolSettings
    metrics: Metrics
    servers: list[Server] = field(default_factory=list)
    session: aiohttp.ClientSession | None = None
    lean: LeanClient | None = None  # whole bodies (shared by the pools of one tls_verify)
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
        *,
        lean: bool = False,
    ) -> tuple[Server, Answer]:
        """Send the request to a healthy server; return the server and the
        response (headers read, body not yet). The caller releases it.

        When every server refuses the connection the pool has no healthy
        server left: ``NoHealthyServer`` (503 + Retry-After)."""
        for server in self.candidates():
            try:
                resp = await self.request(
                    server.url, method, path_qs, headers, body, timeout, lean=lean
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

    def request(
        self,
        url: URL,
        method: str,
        path_qs: str,
        headers: Mapping[str, str] | CIMultiDict[str],
        body: object,
        timeout: aiohttp.ClientTimeout,
        *,
        lean: bool = False,
    ) -> Awaitable[Answer]:
        """One request to ``url`` (a server of this pool, or a redirect target
        reached with this pool's session and TLS settings); errors mapped.
        ``lean``: a body held whole (``bytes``) goes through the lean client
        (``leanclient.py``), with the same timeouts and errors. Not a
        coroutine itself: the awaitable returned is the one client's, so a
        held Ping waits without this frame."""
        assert self.session is not None, "pool not started"
        if lean and isinstance(body, bytes) and self.lean is not None:
            return self.lean.request(
                url, method, path_qs, headers, body, server=_shown(url),
                connect_timeout=timeout.sock_connect,
                read_timeout=timeout.sock_read,
            )  # fmt: skip
        return _mapped(
            _shown(url),
            self.session.request(
                method,
                url.join(URL(path_qs)),
                headers=headers,
                data=body,
                timeout=timeout,
                allow_redirects=False,
                skip_auto_headers=_NO_AUTO_HEADERS,
            ),
        )

    async def probe(self, server: Server) -> Failure | None:
        """Active health check: an OPTIONS request to the EAS endpoint (any
        answer below 500 is a live server; None: it passed)."""
        assert self.session is not None
        hc = self.settings.health_check
        try:
            with map_client_errors(server.label):
                async with self.session.options(
                    server.url.join(URL(EAS_PATH)),
                    timeout=aiohttp.ClientTimeout(total=hc.timeout_seconds),
                ) as resp:
                    return bad_status(resp.status) if resp.status >= 500 else None
        except UpstreamError as exc:
            return classify(exc.__cause__ or exc)

    async def health_loop(self) -> None:
        """Probe every server each interval (the first round at once)."""
        while True:
            servers = list(self.servers)
            results = await asyncio.gather(*(self.probe(s) for s in servers))
            for server, failure in zip(servers, results, strict=True):
                self.observe(server, failure)
            await asyncio.sleep(self.settings.health_check.interval_seconds)


class PoolMap(dict[str, BackendPool]):
    """The current pools by name; a pool a reload removed is not listed, but
    ``[name]`` still finds it (a request decided before the reload names it)."""

    def __init__(self) -> None:
        super().__init__()
        self.retired: dict[str, BackendPool] = {}

    def __missing__(self, name: str) -> BackendPool:
        return self.retired[name]


def _session(settings: BackendPoolSettings) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=0, ssl=settings.tls_verify, keepalive_timeout=30)
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=None),
        cookie_jar=aiohttp.DummyCookieJar(),
    )


class Upstreams:
    """All backend pools, their sessions and health-check tasks."""

    def __init__(
        self,
        pools: tuple[BackendPoolSettings, ...],
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = metrics
        self.clock = clock
        self.pools = PoolMap()
        for p in pools:
            servers = [Server(URL(u)) for u in p.servers]
            self.pools[p.name] = BackendPool(p, metrics, servers, clock=clock)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._sessions: list[aiohttp.ClientSession] = []
        self._lean = {verify: LeanClient(verify=verify) for verify in (True, False)}
        self._health_checks = True

    async def start(self, *, health_checks: bool = True) -> None:
        """Open one session per pool and start the active health checks
        (without them every server is taken as up)."""
        self._health_checks = health_checks
        for pool in self.pools.values():
            self._open(pool, None)

    def _open(self, pool: BackendPool, session: aiohttp.ClientSession | None) -> None:
        """Give ``pool`` a session (a new one unless given) and its health check."""
        if session is None:
            session = _session(pool.settings)
            self._sessions.append(session)
        pool.session = session
        pool.lean = self._lean[pool.settings.tls_verify]
        for server in pool.servers:
            if not self._health_checks:
                server.health.observe(None, pool.clock(), failures_to_down=1, active=False)
            pool.publish(server)
        old = self._tasks.pop(pool.name, None)
        if old is not None:
            old.cancel()
        if self._health_checks:
            self._tasks[pool.name] = create_task(pool.health_loop(), name=f"health:{pool.name}")

    def reconfigure(self, pools: tuple[BackendPoolSettings, ...]) -> list[str]:
        """Apply a reloaded pool list (see the module comment); return what changed."""
        wanted = {p.name: p for p in pools}
        done = [self._remove(name) for name in list(self.pools) if name not in wanted]
        for p in pools:
            old = self.pools.get(p.name)
            if old is None or old.settings != p:
                done.append(self._replace(old, p))
        return done

    def _replace(self, old: BackendPool | None, settings: BackendPoolSettings) -> str:
        known = {s.url: s for s in old.servers} if old is not None else {}
        servers = [known.get(URL(u)) or Server(URL(u)) for u in settings.servers]
        pool = BackendPool(settings, self.metrics, servers, clock=self.clock)
        self.pools[settings.name] = pool
        keep = old is not None and old.settings.tls_verify == settings.tls_verify
        if old is not None:
            self._forget_servers(old, {s.label for s in servers})
        self._open(pool, old.session if keep and old is not None else None)
        return f"{'changed' if old is not None else 'added'} pool {settings.name}"

    def _remove(self, name: str) -> str:
        pool = self.pools.pop(name)
        self.pools.retired[name] = pool
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()
        self._forget_servers(pool, set())
        with contextlib.suppress(KeyError):
            self.metrics.pool_healthy.remove(name)
        return f"removed pool {name}"

    def _forget_servers(self, pool: BackendPool, kept: set[str]) -> None:
        for server in pool.servers:
            if server.label not in kept:
                with contextlib.suppress(KeyError):
                    self.metrics.server_up.remove(pool.name, server.label)

    async def close(self) -> None:
        """Stop the health checks and close every session."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        for lean in self._lean.values():
            lean.close()
        for session in self._sessions:
            await session.close()
