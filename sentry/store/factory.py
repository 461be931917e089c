"""Build the configured store from its settings section (used by the composition root).

``kind: sqlite`` opens (creating and migrating) the file at ``path``, relative
to ``root`` unless absolute, creating its directory; ``kind: memory`` keeps
everything in the process (demos, tests): nothing survives a restart.
"""

from __future__ import annotations

from pathlib import Path

from sentry.settings import StoreSettings

from .base import Store
from .memory import MemoryStore
from .sqlite import SqliteStore

__all__ = ["open_store"]


async def open_store(settings: StoreSettings, *, root: Path | str = Path(".")) -> Store:
    """The store ``settings`` describe, opened and ready to ``load``."""
    if settings.kind == "memory":
        return MemoryStore()
    path = Path(settings.path)
    if not path.is_absolute():
        path = Path(root) / path
    path.parent.mkdir(parents=True, exist_ok=True)
    return await SqliteStore.open(path)
