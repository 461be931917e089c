"""The OAuth signing keys (JWKS): loaded from a file or an https URL, kept fresh.

Approach. ``JwksSource`` owns the only I/O of token validation. It loads the
keys at start, then again every ``jwks_refresh_seconds`` and on demand when a
token names a ``kid`` the set does not hold (a key rotation at the issuer).
On-demand loads are rate-limited to one per ``jwks_min_refresh_seconds``, so
a stream of tokens with made-up ``kid`` values cannot make the gateway hammer
the issuer, and concurrent callers share one load in flight. A failed load
keeps the last good keys (logged, counted); with no keys at all, Bearer
requests are answered 503 with Retry-After rather than accepted or refused
for good. A file that cannot be loaded at start stops start-up (``JwksError``
naming the key path); an unreachable URL does not: Basic users keep working
and the periodic load retries.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import structlog

from sentry.aio import cancel_wait, create_task, read_upto
from sentry.observability import Metrics
from sentry.settings import OAuthSettings, SettingsError

from .tokens import MAX_JWKS_BYTES, KeySet, parse_jwks

__all__ = ["JwksError", "JwksSource"]

log = structlog.get_logger("sentry.oauth")


class JwksError(SettingsError):
    """The signing key file could not be loaded at start; the message names the setting."""


class JwksSource:
    """The current ``KeySet`` and the task that refreshes it."""

    def __init__(
        self,
        settings: OAuthSettings,
        metrics: Metrics,
        *,
        root: Path = Path("."),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.keys: KeySet | None = None
        self._file = None if settings.jwks_file is None else root / settings.jwks_file
        self._monotonic = monotonic
        self._last_load = -math.inf
        self._inflight: asyncio.Task[bool] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._loop_task: asyncio.Task[None] | None = None

    @property
    def where(self) -> str:
        """The setting the keys come from, for log events and errors."""
        if self._file is not None:
            return "identity.oauth.jwks_file"
        return "identity.oauth.jwks_url"

    async def start(self) -> None:
        """Load the keys and start the periodic refresh (``JwksError`` for a bad file)."""
        if self._file is None:
            self._session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        loaded = await self.refresh(force=True)
        if not loaded and self._file is not None:
            raise JwksError(f"{self.where}: cannot load signing keys from {self._file}")
        self._loop_task = create_task(self._periodic(), name="oauth:jwks-refresh")

    async def close(self) -> None:
        """Stop refreshing and close the HTTP session."""
        for task in (self._loop_task, self._inflight):
            await cancel_wait(task)
        if self._session is not None:
            await self._session.close()

    async def refresh(self, *, force: bool = False) -> bool:
        """Load the keys now; True when a load succeeded. Without ``force`` at most
        one load per ``jwks_min_refresh_seconds``; callers share a load in flight."""
        task = self._inflight
        if task is None or task.done():
            since = self._monotonic() - self._last_load
            if not force and since < self.settings.jwks_min_refresh_seconds:
                self.metrics.jwks_refreshes.labels("rate_limited").inc()
                return False
            self._last_load = self._monotonic()
            task = self._inflight = create_task(self._load(), name="oauth:jwks-load")
        return await asyncio.shield(task)

    async def _periodic(self) -> None:
        while True:
            await asyncio.sleep(self.settings.jwks_refresh_seconds)
            await self.refresh(force=True)

    async def _load(self) -> bool:
        try:
            data = await (self._read_file() if self._file is not None else self._fetch())
            keys = parse_jwks(data)
        except (OSError, ValueError, aiohttp.ClientError, TimeoutError) as exc:
            self.metrics.jwks_refreshes.labels("error").inc()
            log.warning("jwks_load_failed", source=self.where, error=str(exc) or type(exc).__name__)
            return False
        changed = self.keys is None or keys.kids != self.keys.kids
        self.keys = keys
        self.metrics.jwks_refreshes.labels("ok").inc()
        self.metrics.jwks_keys.set(len(keys.keys))
        log.info(
            "jwks_loaded", source=self.where, keys=len(keys.keys), skipped=keys.skipped,
            changed=changed,
        )  # fmt: skip
        return True

    async def _read_file(self) -> bytes:
        assert self._file is not None
        path = self._file

        def read() -> bytes:
            with path.open("rb") as fh:
                return fh.read(MAX_JWKS_BYTES + 1)

        return await asyncio.to_thread(read)

    async def _fetch(self) -> bytes:
        assert self._session is not None and self.settings.jwks_url is not None
        timeout = aiohttp.ClientTimeout(total=self.settings.jwks_timeout_seconds)
        async with self._session.get(
            self.settings.jwks_url, timeout=timeout, allow_redirects=False
        ) as resp:
            if resp.status != 200:
                raise ValueError(f"HTTP {resp.status} from the JWKS URL")
            data = await read_upto(resp.content, MAX_JWKS_BYTES + 1)  # not just a first segment
        if len(data) > MAX_JWKS_BYTES:
            raise ValueError(f"JWKS is over {MAX_JWKS_BYTES} bytes")
        return data
