"""Several gateway nodes on one PostgreSQL: convergence through the change feed.

See ``follower`` (``Follower``): each node keeps its in-memory snapshot and
decides locally, applies what other nodes commit, and writes only on the
latest state (the store's guard, ``sentry.store.postgres``).
"""

from __future__ import annotations

from .follower import Follower

__all__ = ["Follower"]
