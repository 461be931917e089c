"""Percentiles and the small formatting helpers the reports share."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["fmt", "percentile", "summary"]


def percentile(ordered: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of an already sorted sequence."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


def summary(values: Sequence[float], scale: float = 1.0) -> dict[str, float]:
    """count, p50, p90, p99, max (times ``scale``) of ``values``."""
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "p50": percentile(ordered, 50) * scale,
        "p90": percentile(ordered, 90) * scale,
        "p99": percentile(ordered, 99) * scale,
        "max": (ordered[-1] if ordered else math.nan) * scale,
    }


def fmt(value: float | int | None, digits: int = 2) -> str:
    """A table cell: thousands separators, ``digits`` decimals, "-" for none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int) or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"
