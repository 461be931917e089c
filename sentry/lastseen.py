"""Last-seen times, batched: the hot path's only write, taken off the request.

Approach. A request of a known association whose state did not change yields
only a ``Touch`` (design §4: no database round trip on the hot path). The
access state applies it to the snapshot at once and hands it here; ``flush``
writes the latest Touch of each association in one store transaction (every
``store.touch_flush_seconds``, from ``sentry.housekeeping``, and at shutdown).
A failed write keeps the batch for the next flush (a newer Touch of the same
association wins); a store known to be failing (``StoreUnavailable``) has
logged the failure itself.
"""

from __future__ import annotations

from collections.abc import Iterable

import structlog

from sentry.model import AssociationKey
from sentry.policy import Touch
from sentry.store.base import Store, StoreUnavailable

__all__ = ["LastSeen"]

log = structlog.get_logger("sentry.access")


class LastSeen:
    """The pending Touches, one per association, and their batched write."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._pending: dict[AssociationKey, Touch] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def remember(self, touches: Iterable[Touch]) -> None:
        for t in touches:
            self._pending[t.key] = t

    async def flush(self) -> int:
        """Write the pending last-seen timestamps; return how many."""
        if not self._pending:
            return 0
        batch, self._pending = list(self._pending.values()), {}
        try:
            await self.store.apply(batch)
        except Exception as exc:
            if not isinstance(exc, StoreUnavailable):
                log.exception("store_write_failed", during="touch_flush")
            for t in batch:
                self._pending.setdefault(t.key, t)
            return 0
        return len(batch)
