"""Rate-limited reporting: a flood of one kind of event becomes a few lines.

Approach. An attacker who opens 20,000 connections, or a process out of file
descriptors, must not turn the log into the bottleneck (the issue saw 39 MB
of one error in 20 s). ``RateLimiter`` is a pure token bucket per key with
time passed in: each key may emit ``burst`` events at once and then one per
``interval`` seconds; what it refuses is counted, and the next event that
passes carries that count (``suppressed``) so nothing is silently lost.
The number of keys is bounded: past ``max_keys`` the least recently seen key
is forgotten (its pending count goes with it, which only ever under-reports
a flood that is already being reported).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

__all__ = ["RateLimiter"]


@dataclass
class _Bucket:
    tokens: float
    stamp: float
    suppressed: int = 0


class RateLimiter:
    """``allow(key, now)`` -> (emit?, events suppressed since the last one emitted)."""

    def __init__(self, interval: float = 10.0, burst: int = 5, max_keys: int = 256) -> None:
        self.interval = interval
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[Hashable, _Bucket] = OrderedDict()

    def allow(self, key: Hashable, now: float) -> tuple[bool, int]:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            refill = (now - bucket.stamp) / self.interval if self.interval > 0 else self.burst
            bucket.tokens = min(float(self.burst), bucket.tokens + refill)
            bucket.stamp = now
        if bucket.tokens < 1.0:
            bucket.suppressed += 1
            return False, 0
        bucket.tokens -= 1.0
        suppressed, bucket.suppressed = bucket.suppressed, 0
        return True, suppressed
