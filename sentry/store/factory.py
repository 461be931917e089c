"""Build the configured store from its settings section (used by the composition root).

``kind: sqlite`` opens (creating and migrating) the file at ``path``, relative
to ``root`` unless absolute, creating its directory (0700); ``kind: memory``
keeps everything in the process (demos, tests): nothing survives a restart;
``kind: postgresql`` connects to the server ``dsn`` names (the password from
``password_file``, else the URI or libpq's ``PGPASSWORD`` / ``PGPASSFILE`` /
``~/.pgpass``, which the driver reads), migrating its schema.
``open_and_load`` also loads the state, and turns every way the store can be
unusable (for SQLite: a directory, not a database, damaged, read-only, locked
by another process, unreadable rows; for PostgreSQL: unreachable, refused,
a newer schema) into one ``StoreOpenError`` naming the setting and the file
or (redacted) server.
"""

from __future__ import annotations

from pathlib import Path

from sentry.dsn import redact_dsn
from sentry.errors import StartupError
from sentry.policy.snapshot import Snapshot
from sentry.settings import StoreSettings

from .base import Store, StoreError, StoreOpenError
from .memory import MemoryStore
from .postgres import PostgresOptions, PostgresStore
from .sqlite import SqliteStore

__all__ = [
    "open_and_load",
    "open_store",
    "postgres_options",
    "read_password_file",
    "store_key",
    "store_path",
    "store_where",
]


def store_path(settings: StoreSettings, *, root: Path | str = Path(".")) -> Path:
    """The database file ``settings.path`` names (relative to ``root``)."""
    path = Path(settings.path)
    return path if path.is_absolute() else Path(root) / path


def store_key(settings: StoreSettings) -> str:
    """The setting that names where the state lives (for error messages)."""
    return "store.dsn" if settings.kind == "postgresql" else "store.path"


def store_where(settings: StoreSettings, *, root: Path | str = Path(".")) -> str:
    """Where the state lives, safe to show: the file, or the redacted URI."""
    if settings.kind == "postgresql":
        return redact_dsn(settings.dsn or "")
    return str(store_path(settings, root=root))


def read_password_file(settings: StoreSettings, root: Path | str = Path(".")) -> str | None:
    """The password in ``store.password_file`` (its first line), or None when
    not configured; ``StartupError`` on ``store.password_file`` when unreadable."""
    if settings.password_file is None:
        return None
    path = Path(settings.password_file)
    path = path if path.is_absolute() else Path(root) / path
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problem = getattr(exc, "strerror", None) or str(exc)
        raise StartupError("store.password_file", f"{path}: cannot read: {problem}") from None
    password = text.splitlines()[0] if text else ""
    if not password:
        raise StartupError("store.password_file", f"{path}: the first line is empty")
    return password


def postgres_options(settings: StoreSettings) -> PostgresOptions:
    """The PostgreSQL store's options from the settings."""
    return PostgresOptions(
        pool_size=settings.pool_size,
        connect_timeout=settings.connect_timeout_seconds,
        command_timeout=settings.command_timeout_seconds,
        feed_retention=settings.feed_retention_seconds,
    )


async def open_store(settings: StoreSettings, *, root: Path | str = Path(".")) -> Store:
    """The store ``settings`` describe, opened and ready to ``load``."""
    if settings.kind == "memory":
        return MemoryStore()
    if settings.kind == "postgresql":
        password = read_password_file(settings, root)
        options = postgres_options(settings)
        return await PostgresStore.open(settings.dsn or "", password=password, options=options)
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
        where = store_where(settings, root=root)
        raise StoreOpenError(f"{where} cannot be loaded: {exc}", store_key(settings)) from None
