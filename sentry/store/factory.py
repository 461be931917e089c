"""Build the configured store from its settings section (used by the composition root).

``kind: sqlite`` opens (creating and migrating) the file at ``path``, relative
to ``root`` unless absolute, creating its directory (0700); ``kind: memory``
keeps everything in the process (demos, tests): nothing survives a restart.
``open_and_load`` also loads the state, and turns every way the file can be
unusable (a directory, not a database, damaged, read-only, locked by another
process, unreadable rows) into one ``StoreOpenError`` naming the file.
"""

from __future__ import annotations

from pathlib import Path

from sentry.policy.snapshot import Snapshot
from sentry.settings import StoreSettings

from .base import Store, StoreError, StoreOpenError
from .memory import MemoryStore
from .sqlite import SqliteStore

__all__ = ["open_and_load", "open_store", "store_path"]


def store_path(settings: StoreSettings, *, root: Path | str = Path(".")) -> Path:
    """The database file ``settings.path`` names (relative to ``root``)."""
    path = Path(settings.path)
    return path if path.is_absolute() else Path(root) / path


async def open_store(settings: StoreSettings, *, root: Path | str = Path(".")) -> Store:
    """The store ``settings`` describe, opened and ready to ``load``."""
    if settings.kind == "memory":
        return MemoryStore()
    return await SqliteStore.open(store_path(settings, root=root))


async def open_and_load(
    settings: StoreSettings, *, root: Path | str = Path(".")
) -> tuple[Store, Snapshot]:
    """Open the store and load its state; ``StoreOpenError`` when either fails."""
    store = await open_store(settings, root=root)
    try:
        return store, await store.load()
    except StoreOpenError:
        await store.close()
        raise
    except (StoreError, ValueError, KeyError, TypeError) as exc:
        await store.close()
        where = store_path(settings, root=root)
        raise StoreOpenError(f"{where} cannot be loaded: {exc}") from None
