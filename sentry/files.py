"""Private files: state and logs are created 0600, their directories 0700.

Approach. The gateway's files hold user names, device data and secrets (the
SQLite database and its ``-wal``/``-shm`` files, the log file, the admin
token, private keys, backups), so everything that creates one goes through
these helpers instead of ``open``/``mkdir``, whose modes depend on the umask.
The mode is given at creation (``os.open(..., 0o600)``), never fixed up
afterwards, so no other user can open the file in between. An existing file
or directory keeps the mode an operator gave it (e.g. 0640 for a log shipper);
``loose_mode`` tells the caller when that mode lets others read it, so it can
warn. Standard library only: any layer may use it.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import Literal, TextIO

__all__ = [
    "PRIVATE_DIR",
    "PRIVATE_FILE",
    "ensure_private_dir",
    "loose_mode",
    "open_private",
    "write_private",
]

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def ensure_private_dir(path: Path | str) -> None:
    """Create ``path`` and any missing parents, each new one 0700.

    Directories that already exist are left as they are (``mkdir -p`` with a
    private mode for what it creates; ``Path.mkdir(parents=True)`` would create
    the parents with the umask's mode).
    """
    missing: list[Path] = []
    current = Path(path)
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:
            continue  # created meanwhile by someone else: theirs to set
        os.chmod(directory, PRIVATE_DIR)  # mkdir's mode passes through the umask


def open_private(path: Path | str, mode: Literal["a", "w", "x"] = "a") -> TextIO:
    """Open a text file for writing (UTF-8, line-buffered), creating it 0600.

    ``a`` appends, ``w`` truncates, ``x`` fails if it exists. The parent
    directory is created (0700) if missing.
    """
    flags = {
        "a": os.O_APPEND | os.O_CREAT,
        "w": os.O_TRUNC | os.O_CREAT,
        "x": os.O_CREAT | os.O_EXCL,
    }[mode]
    p = Path(path)
    ensure_private_dir(p.parent)
    fd = os.open(p, os.O_WRONLY | flags | getattr(os, "O_CLOEXEC", 0), PRIVATE_FILE)
    return os.fdopen(fd, mode, encoding="utf-8", buffering=1)


def write_private(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, the file 0600 from the start.

    The bytes go to a temporary file beside ``path`` (created 0600), are
    flushed to disk, and the temporary file is renamed over ``path``: a reader
    sees the old content or the new, never a part. The parent directory is
    created (0700) if missing.
    """
    p = Path(path)
    ensure_private_dir(p.parent)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def loose_mode(path: Path | str) -> int | None:
    """The permission bits of ``path`` when group or others may access it, else None."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None
    return mode if mode & 0o077 else None
