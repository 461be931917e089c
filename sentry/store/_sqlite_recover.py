"""Put the database the store holds open back at its path (after a deletion or replacement).

Approach. When the database file (or its write-ahead log) is deleted or replaced
under the running gateway, SQLite keeps using the open, now unlinked, files:
they and the memory are the only full copy of the state. ``recover_files``
makes that copy durable at the path again, then closes the old connection;
the caller opens the path afresh. Three cases, by what is at the path:

* the database at the path is still the open one (only its ``-wal`` or
  ``-shm`` went): a full checkpoint moves every page into it;
* nothing is there: SQLite's online backup copies the open database, page for
  page, into a temporary file beside the path (0600, synced by SQLite), which
  is then hard-linked to the path: ``link`` fails if a file appeared
  meanwhile, so nothing is ever overwritten;
* another file is there: refused, the operator moves it aside first (the
  gateway cannot know which copy the operator wants).

A ``-wal`` or ``-shm`` at the path that is not the open one is refused too:
SQLite would otherwise read it as belonging to the new database, and closing
the old connection deletes those names.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from sentry.files import PRIVATE_FILE, ensure_private_dir

from ._sqlite_files import FileGuard
from .base import StoreError

__all__ = ["recover_files"]


def recover_files(conn: sqlite3.Connection, guard: FileGuard) -> None:
    """Make the open database durable at ``guard.path`` and close ``conn``.

    ``StoreError`` (nothing changed, ``conn`` still open) when a file of
    someone else's is in the way or nothing needs recovering."""
    foreign = guard.foreign_files()
    if foreign:
        names = ", ".join(str(p) for p in foreign)
        raise StoreError(f"not the gateway's files: {names}; move them aside first")
    if guard.database_in_place():
        if guard.problem() is None:
            raise StoreError("nothing to recover: the database file is in place")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    else:
        _copy_to(conn, guard.path)
    conn.close()
    guard.release()


def _copy_to(conn: sqlite3.Connection, path: Path) -> None:
    ensure_private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.recover")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    try:
        dest = sqlite3.connect(tmp)
        try:
            conn.backup(dest)
        finally:
            dest.close()
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise StoreError(f"{path} appeared meanwhile; move it aside first") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
