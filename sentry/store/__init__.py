"""Persistence behind one ``Store`` protocol (see ``base``).

Implementations live in their own modules and are imported from there, so
that importing the protocol pulls in nothing else: ``sentry.store.memory``
(``MemoryStore``, for tests) and ``sentry.store.sqlite`` (``SqliteStore``,
the embedded default).
"""

from __future__ import annotations

from .base import (
    AssociationFilter,
    AssociationState,
    SchemaError,
    Store,
    StoreError,
    StoreFault,
    StoreOpenError,
    StoreProblem,
    StoreUnavailable,
    association_state,
)

__all__ = [
    "AssociationFilter",
    "AssociationState",
    "SchemaError",
    "Store",
    "StoreError",
    "StoreFault",
    "StoreOpenError",
    "StoreProblem",
    "StoreUnavailable",
    "association_state",
]
