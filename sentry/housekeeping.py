"""The gateway's periodic chores, outside the access state.

Every ``store.touch_flush_seconds``: write the batched last-seen times
(``AccessState.flush_touches``), remove unverified rows not seen for
``store.unverified_expiry_seconds`` (``AccessState.expire_unverified``, a
commit like any other), and publish the state gauges
(``Metrics.publish_state``). ``close`` stops the loop and writes what is
pending. The test harness runs no loop (``every`` None) and calls the chores
itself, so a test that counts store transactions counts its own.
"""

from __future__ import annotations

import asyncio

import structlog

from sentry.access import AccessState
from sentry.aio import cancel_wait, create_task
from sentry.observability import Metrics

__all__ = ["Housekeeping"]

log = structlog.get_logger("sentry.access")


class Housekeeping:
    """The periodic last-seen flush, expiry sweep and gauge publishing."""

    def __init__(self, state: AccessState, metrics: Metrics, every: float | None) -> None:
        self.state = state
        self.metrics = metrics
        self.every = every
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Publish the gauges once, then start the loop (none when ``every`` is None)."""
        self.metrics.publish_state(self.state.snapshot)
        if self.every is not None:
            self._task = create_task(self._loop(self.every), name="access:flush-touches")

    async def _loop(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            await self.state.flush_touches()
            try:
                await self.state.expire_unverified()
            except Exception:
                self.metrics.store_errors.inc()
                log.exception("store_write_failed", during="expire_unverified")
            self.metrics.publish_state(self.state.snapshot)

    async def close(self) -> None:
        """Stop the loop and write what is pending."""
        await cancel_wait(self._task)
        await self.state.flush_touches()
