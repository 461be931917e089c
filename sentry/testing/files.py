"""Real file failures for tests: files made read-only, and damaged database pages.

Approach. A read-only file must refuse writes to the process that runs the
gateway, whoever that is. For an ordinary user, taking the write bits away
(``chmod``) does it; ``root`` ignores permission bits, so for ``root`` the
file is made immutable (``chattr +i``, which refuses even root and even
writes through descriptors opened earlier). ``read_only`` is a context
manager that undoes what it did, so pytest can remove the files afterwards.
Never make a ``-shm`` file immutable: SQLite maps it into memory, and a write
to the mapping then kills the process with SIGBUS.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["CannotMakeReadOnly", "damage_database", "read_only"]


class CannotMakeReadOnly(Exception):
    """This system cannot make a file read-only for the current user (skip the test)."""


@contextmanager
def read_only(*paths: Path) -> Iterator[None]:
    """Make ``paths`` (files or directories) refuse writes until the block ends."""
    if os.geteuid() != 0:
        modes = {p: stat.S_IMODE(p.stat().st_mode) for p in paths}
        for p in paths:
            p.chmod(modes[p] & ~0o222)
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    _chattr("+i", paths)
    try:
        yield
    finally:
        _chattr("-i", paths)


def _chattr(flag: str, paths: tuple[Path, ...]) -> None:
    tool = shutil.which("chattr")
    if tool is None:
        raise CannotMakeReadOnly("chattr is not installed")
    done = subprocess.run(
        [tool, flag, *map(str, paths)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise CannotMakeReadOnly(f"chattr {flag} failed: {done.stderr.strip()}")


def damage_database(path: Path) -> None:
    """Overwrite every page but the first of the SQLite database at ``path``
    with garbage, the way a failing disk or a stray writer would, while another
    connection (the gateway's) may hold it open.

    The write-ahead log is first checkpointed into the file (so the damaged
    pages are the current ones), and afterwards the header's ``user_version``
    is bumped through SQLite: every other connection then sees that the
    database changed and reads its pages from the file again instead of its
    cache."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        size = path.stat().st_size
        with path.open("r+b") as fh:
            fh.seek(page)
            fh.write(b"\xa5" * (size - page))
            fh.flush()
            os.fsync(fh.fileno())
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        conn.execute(f"PRAGMA user_version = {version + 1}")
    finally:
        conn.close()
