"""Backend redirects (HTTP 451 + X-MS-Location, MS-ASHTTP 3.1.5.2.2), followed by the gateway.

Approach. A mailbox server answers 451 when the mailbox lives elsewhere; a
device that saw it would talk to the new server directly, around the gateway.
So a 451 never reaches the device. ``Redirector.send`` wraps the pool's send:

1. If the mailbox has a cached target that is still allowed and the mailbox
   still routes to the pool that redirected it, the request goes there first
   (a connect failure drops the entry and falls back to the pool).
2. On a 451 the location is checked: it must name the ActiveSync endpoint of
   a server of a pool of the *same backend type*, or an origin in the pool's
   ``redirect_allow`` list. Anything else (another type, an unknown host, no
   X-MS-Location, more than ``max_hops`` hops) is refused: 502 to the device,
   an event ``redirect_refused`` and ``sentry_redirects{outcome}``.
3. An allowed target is cached for the mailbox, then the request is replayed
   there. The backend did not process a 451'd request, so a replay is safe,
   but only with the body still in hand: inspected bodies are buffered and
   an empty one is trivially replayable; a body that was streamed is gone,
   and the device gets 503 + Retry-After, retries, and lands on the cache.

The cache (``RedirectCache``) lives in memory, bounded (LRU) with a TTL: it
is a hint that saves one 451 round trip per request, never an authority.
Every use re-checks that the target is still allowed and that the mailbox
still routes to the same pool (a routing change clears the entry). Losing it
on restart costs one extra 451 per mailbox, because the old server keeps
answering 451; nothing about access depends on it, so it need not be durable
(Ivanti's redirect-URL cache is an in-memory cache cleared the same way).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

import aiohttp
import structlog
from multidict import CIMultiDict
from yarl import URL

from sentry.observability import Metrics
from sentry.settings import RedirectSettings

from .errors import UpstreamConnectError, UpstreamError
from .forward import BodyStream
from .upstream import Answer, BackendPool, Server

__all__ = [
    "CachedRedirect",
    "Mailbox",
    "Outcome",
    "RedirectCache",
    "RedirectNotReplayable",
    "RedirectRefused",
    "Redirector",
    "Target",
    "allowed_target",
    "parse_location",
]

log = structlog.get_logger("sentry.redirects")
_EAS_PATHS = frozenset({"", "/microsoft-server-activesync"})


class Outcome(StrEnum):
    """What happened with a redirect (a bounded metric label)."""

    FOLLOWED = "followed"
    CACHE_HIT = "cache_hit"
    REFUSED_NO_LOCATION = "refused_no_location"
    REFUSED_INVALID = "refused_invalid_location"
    REFUSED_FOREIGN = "refused_foreign"
    REFUSED_HOPS = "refused_too_many_hops"
    NOT_REPLAYABLE = "not_replayable"
    INVALIDATED = "cache_invalidated"
    TARGET_FAILED = "cached_target_failed"


class Mailbox(NamedTuple):
    """Whose request it is: the canonical user and the domain it came with."""

    user: str
    domain: str | None


class RedirectRefused(UpstreamError):
    """A 451 the gateway will not follow (fail closed)."""

    kind = "redirect_refused"

    def __init__(self, outcome: Outcome, server: str) -> None:
        super().__init__("the backend redirected to a server the gateway does not use", server)
        self.outcome = outcome


class RedirectNotReplayable(UpstreamError):
    """The target is known but the body was streamed: retry (503 + Retry-After)."""

    http_status = 503
    kind = "redirect_not_replayable"
    public_text = "service unavailable, retry"

    def __init__(self, retry_after: int, server: str) -> None:
        super().__init__("the mailbox moved to another server: retry", server)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Target:
    """Where a redirect leads: an origin, and the pool whose session reaches it."""

    origin: URL
    pool: str

    @property
    def label(self) -> str:
        return str(self.origin)


@dataclass(frozen=True, slots=True)
class CachedRedirect:
    """One mailbox's redirect target, and the pool it routed to when cached."""

    mailbox: Mailbox
    home_pool: str
    target: Target
    created: float
    expires: float


class RedirectCache:
    """Redirect targets per mailbox user: in memory, LRU-bounded, with a TTL.
    Time is passed in; ``on_change`` is told the new size after each change."""

    def __init__(
        self,
        ttl: float = 86400.0,
        max_entries: int = 100_000,
        on_change: Callable[[int], object] | None = None,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.on_change = on_change
        self._entries: OrderedDict[str, CachedRedirect] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, user: str, now: float) -> CachedRedirect | None:
        entry = self._entries.get(user)
        if entry is None:
            return None
        if entry.expires <= now:
            self.drop(user)
            return None
        self._entries.move_to_end(user)  # least recently used goes first
        return entry

    def put(self, mailbox: Mailbox, home_pool: str, target: Target, now: float) -> CachedRedirect:
        entry = CachedRedirect(mailbox, home_pool, target, now, now + self.ttl)
        self._entries[mailbox.user] = entry
        self._entries.move_to_end(mailbox.user)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        self._changed()
        return entry

    def drop(self, user: str) -> bool:
        found = self._entries.pop(user, None) is not None
        if found:
            self._changed()
        return found

    def clear(self) -> int:
        n = len(self._entries)
        self._entries.clear()
        self._changed()
        return n

    def entries(self, now: float) -> list[CachedRedirect]:
        """The live entries, oldest use first (expired ones are dropped)."""
        for user in [u for u, e in self._entries.items() if e.expires <= now]:
            self.drop(user)
        return list(self._entries.values())

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(len(self._entries))


def _origin(url: URL) -> tuple[str, str, int | None] | None:
    if url.scheme not in ("http", "https") or not url.host or url.user or url.password:
        return None
    return url.scheme, url.host.lower(), url.port


def allowed_target(origin: URL, home: BackendPool, pools: Iterable[BackendPool]) -> Target | None:
    """The target for ``origin`` when ``home`` may redirect there: a server of a
    pool of the same backend type, or an origin of ``home``'s allow-list."""
    key = _origin(origin)
    if key is None:
        return None
    for pool in pools:
        if pool.type == home.type and any(_origin(s.url) == key for s in pool.servers):
            return Target(_base(origin), pool.name)
    if any(_origin(URL(a)) == key for a in home.settings.redirect_allow):
        return Target(_base(origin), home.name)
    return None


def _base(url: URL) -> URL:
    return URL.build(scheme=url.scheme, host=url.host or "", port=url.explicit_port)


def parse_location(value: str | None) -> URL | None:
    """The X-MS-Location URL when it is an absolute http(s) URL of an ActiveSync
    endpoint (path ``/Microsoft-Server-ActiveSync`` or none); else None."""
    if value is None or not value.strip() or len(value) > 2048:
        return None
    try:
        url = URL(value.strip())
    except (ValueError, TypeError):
        return None
    if not url.is_absolute() or url.path.rstrip("/").lower() not in _EAS_PATHS:
        return None
    return url if _origin(url) is not None else None


class Redirector:
    """Sends a forwarded request, following and caching the backend's redirects."""

    def __init__(
        self,
        settings: RedirectSettings,
        pools: Mapping[str, BackendPool],
        cache: RedirectCache,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.pools = pools
        self.cache = cache
        self.metrics = metrics
        self.clock = clock

    async def send(
        self,
        pool: BackendPool,
        mailbox: Mailbox | None,
        method: str,
        path_qs: str,
        headers: CIMultiDict[str],
        body: bytes | BodyStream,
        timeout: aiohttp.ClientTimeout,
        *,
        lean: bool = False,
    ) -> tuple[Server, Answer]:
        """Like ``BackendPool.send``; a 451 is followed (or refused), never returned.
        Without a cached target the pool is asked from this frame (a held Ping
        waits with one frame fewer); with one, through ``_via_cache``."""
        entry = self._cached(pool, mailbox)
        if entry is None:
            server, resp = await pool.send(method, path_qs, headers, body, timeout, lean=lean)
        else:
            server, resp = await self._via_cache(
                entry, pool, mailbox, method, path_qs, headers, body, timeout, lean=lean
            )
        hops = 0
        while resp.status == 451:
            location = resp.headers.get("X-MS-Location")
            resp.release()
            hops += 1
            target = self._target(pool, server, location, hops)
            if mailbox is not None:
                self.cache.put(mailbox, pool.name, target, self.clock())
            replay = _replayable(body)
            if replay is None:
                self._count(pool, Outcome.NOT_REPLAYABLE, mailbox, server.label, target.label)
                raise RedirectNotReplayable(self.settings.retry_after_seconds, server.label)
            self._count(pool, Outcome.FOLLOWED, mailbox, server.label, target.label, hop=hops)
            body = replay
            server, resp = await self._send_to(
                target, method, path_qs, headers, body, timeout, lean=lean
            )
        return server, resp

    async def _via_cache(
        self,
        entry: CachedRedirect,
        pool: BackendPool,
        mailbox: Mailbox | None,
        method: str,
        path_qs: str,
        headers: CIMultiDict[str],
        body: bytes | BodyStream,
        timeout: aiohttp.ClientTimeout,
        *,
        lean: bool = False,
    ) -> tuple[Server, Answer]:
        """The mailbox's cached target first; the pool when it cannot be reached."""
        try:
            return await self._send_to(
                entry.target, method, path_qs, headers, body, timeout, lean=lean
            )
        except UpstreamConnectError:
            if getattr(body, "started", False):
                raise
            self.cache.drop(entry.mailbox.user)
            self._count(pool, Outcome.TARGET_FAILED, mailbox, entry.target.label)
        return await pool.send(method, path_qs, headers, body, timeout, lean=lean)

    def _cached(self, pool: BackendPool, mailbox: Mailbox | None) -> CachedRedirect | None:
        """The mailbox's cached target while it is allowed; stale entries are dropped."""
        if mailbox is None:
            return None
        entry = self.cache.get(mailbox.user, self.clock())
        if entry is None:
            return None
        if (
            entry.home_pool != pool.name
            or allowed_target(entry.target.origin, pool, self.pools.values()) != entry.target
        ):
            self.cache.drop(mailbox.user)
            self._count(pool, Outcome.INVALIDATED, mailbox, entry.target.label)
            return None
        self.metrics.redirects.labels(pool.name, Outcome.CACHE_HIT.value).inc()
        return entry

    def _target(self, pool: BackendPool, server: Server, location: str | None, hop: int) -> Target:
        url = parse_location(location)
        outcome: Outcome | None = None
        target = None if url is None else allowed_target(url, pool, self.pools.values())
        if hop > self.settings.max_hops:
            outcome = Outcome.REFUSED_HOPS
        elif location is None:
            outcome = Outcome.REFUSED_NO_LOCATION
        elif url is None:
            outcome = Outcome.REFUSED_INVALID
        elif target is None:
            outcome = Outcome.REFUSED_FOREIGN
        if outcome is not None or target is None:
            outcome = outcome or Outcome.REFUSED_FOREIGN
            shown = None if location is None else location[:200]
            self.metrics.redirects.labels(pool.name, outcome.value).inc()
            log.warning(
                "redirect_refused", pool=pool.name, reason=outcome.value, server=server.label,
                location=shown, hop=hop,
            )  # fmt: skip
            raise RedirectRefused(outcome, server.label)
        return target

    async def _send_to(
        self,
        target: Target,
        method: str,
        path_qs: str,
        headers: CIMultiDict[str],
        body: bytes | BodyStream,
        timeout: aiohttp.ClientTimeout,
        *,
        lean: bool = False,
    ) -> tuple[Server, Answer]:
        pool = self.pools[target.pool]
        resp = await pool.request(target.origin, method, path_qs, headers, body, timeout, lean=lean)
        return Server(target.origin), resp

    def _count(
        self,
        pool: BackendPool,
        outcome: Outcome,
        mailbox: Mailbox | None,
        where: str,
        to: str | None = None,
        *,
        hop: int | None = None,
    ) -> None:
        self.metrics.redirects.labels(pool.name, outcome.value).inc()
        log.info(
            f"redirect_{outcome.value}", pool=pool.name, user=None if mailbox is None else
            mailbox.user, server=where, target=to, hop=hop,
        )  # fmt: skip


def _replayable(body: bytes | BodyStream) -> bytes | None:
    """The body to send again, when the gateway still has it."""
    if isinstance(body, bytes):
        return body
    content = body.content
    nothing_sent = not body.prefix and body.sent == 0
    if nothing_sent and (content is None or content.at_eof()):
        return b""
    return None
