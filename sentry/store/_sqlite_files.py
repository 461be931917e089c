"""The SQLite store's files: one owner, still the same files, still writable.

Approach.

- Ownership: an exclusive advisory lock (``flock``, non-blocking) on the
  database file itself, taken on a descriptor of our own before SQLite opens
  the file and held until the store closes. ``flock`` locks and SQLite's own
  POSIX record locks do not interact (Linux, BSD), so other processes can still
  open the database with SQLite for reading or an online backup, while a
  second gateway, which also asks for the ``flock``, is refused at start. The
  descriptor is closed only after SQLite's connection: closing any descriptor
  of a file drops every POSIX lock the process holds on it.
- Identity: the device and inode of the open database (``fstat`` of our
  descriptor) and of its ``-wal`` (recorded at open) are compared with what is
  at the path now, so a deleted or replaced file is noticed; SQLite would
  otherwise keep writing into the unlinked file and every acknowledged change
  would be lost at the next start.
- Writability: ``os.access`` on the database, its ``-wal`` and the directory
  (a file made read-only under the running gateway would stop the next start).
- Faults: ``classify`` maps SQLite's result codes and ``errno`` values to the
  ``StoreFault`` kinds; errors that say nothing about the files (a bad SQL
  statement, a constraint) are not faults and propagate unchanged.
- New files are created 0600 (SQLite gives ``-wal``/``-shm`` the database's
  mode) and a missing directory 0700 (``sentry.files``).
"""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
from pathlib import Path

from sentry.files import PRIVATE_FILE, ensure_private_dir

from .base import StoreFault, StoreOpenError, StoreProblem

__all__ = ["FileGuard", "classify", "lock_holder", "problem_of"]

_SQLITE_FAULTS = {
    3: StoreFault.READ_ONLY,  # SQLITE_PERM
    5: StoreFault.BUSY,  # SQLITE_BUSY
    6: StoreFault.BUSY,  # SQLITE_LOCKED
    8: StoreFault.READ_ONLY,  # SQLITE_READONLY
    10: StoreFault.IO_ERROR,  # SQLITE_IOERR
    11: StoreFault.CORRUPT,  # SQLITE_CORRUPT
    13: StoreFault.FULL,  # SQLITE_FULL
    14: StoreFault.IO_ERROR,  # SQLITE_CANTOPEN
    15: StoreFault.IO_ERROR,  # SQLITE_PROTOCOL
    22: StoreFault.IO_ERROR,  # SQLITE_NOLFS
    26: StoreFault.CORRUPT,  # SQLITE_NOTADB
}
_OS_FAULTS = {
    errno.EROFS: StoreFault.READ_ONLY,
    errno.EACCES: StoreFault.READ_ONLY,
    errno.EPERM: StoreFault.READ_ONLY,
    errno.ENOSPC: StoreFault.FULL,
    errno.EDQUOT: StoreFault.FULL,
    errno.EFBIG: StoreFault.FULL,
    errno.ENOENT: StoreFault.DELETED,
}


def classify(exc: BaseException) -> StoreFault | None:
    """The fault an exception reveals about the store's files, or None."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return None if code is None else _SQLITE_FAULTS.get(code & 0xFF)
    if isinstance(exc, OSError):
        return _OS_FAULTS.get(exc.errno or 0, StoreFault.IO_ERROR)
    return None


def problem_of(exc: BaseException, fault: StoreFault) -> StoreProblem:
    """A ``StoreProblem`` describing ``exc``."""
    name = getattr(exc, "sqlite_errorname", None)
    detail = f"{exc} ({name})" if name else str(exc)
    return StoreProblem(fault, detail)


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _identity_at(path: Path) -> tuple[int, int] | None:
    try:
        return _identity(os.stat(path))
    except FileNotFoundError:
        return None


class FileGuard:
    """The lock on one database file and the checks of its files."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.wal = Path(f"{path}-wal")
        self.shm = Path(f"{path}-shm")
        self._fd: int | None = fd
        self._wal_id: tuple[int, int] | None = None
        self._shm_id: tuple[int, int] | None = None

    @classmethod
    def acquire(cls, path: Path) -> FileGuard:
        """Check the place, open (creating 0600) and lock ``path``.

        ``StoreOpenError`` with the reason when that is not possible."""
        _check_place(path)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
        except OSError as exc:
            if classify(exc) is StoreFault.READ_ONLY:
                raise StoreOpenError(f"{path} is read-only ({exc.strerror})") from None
            raise StoreOpenError(f"{path} cannot be opened ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StoreOpenError(f"{path} cannot be locked ({exc.strerror})") from None
            holder = lock_holder(path)
            who = "another process" if holder is None else f"another process (pid {holder})"
            if holder == os.getpid():
                who = "this process (opened twice)"
            raise StoreOpenError(
                f"{path} is in use by {who}: only one gateway may use a database file"
            ) from None
        return cls(path, fd)

    def remember(self) -> None:
        """Record the ``-wal``'s and ``-shm``'s identities (once SQLite made them)."""
        self._wal_id, self._shm_id = _identity_at(self.wal), _identity_at(self.shm)

    def database_in_place(self) -> bool:
        """Whether the path names the open database file."""
        return self._fd is not None and _identity_at(self.path) == _identity(os.fstat(self._fd))

    def foreign_files(self) -> list[Path]:
        """Files at the database's, ``-wal``'s or ``-shm``'s path that are not the
        open ones (someone else's: recovery must not touch them)."""
        own = {
            self.path: None if self._fd is None else _identity(os.fstat(self._fd)),
            self.wal: self._wal_id,
            self.shm: self._shm_id,
        }
        out = []
        for path, identity in own.items():
            found = _identity_at(path)
            if found is not None and found != identity:
                out.append(path)
        return out

    def problem(self) -> StoreProblem | None:
        """Deleted, replaced or unwritable files, or None (a few ``stat`` calls)."""
        return self.identity_problem() or self._access_problem()

    def identity_problem(self) -> StoreProblem | None:
        """Deleted or replaced files, or None (``fstat`` and two ``stat`` calls)."""
        if self._fd is None:
            return None
        expected = [(self.path, _identity(os.fstat(self._fd)), "the database")]
        if self._wal_id is not None:
            expected.append((self.wal, self._wal_id, "the database's write-ahead log"))
        for path, identity, what in expected:
            try:
                now = _identity(os.stat(path))
            except FileNotFoundError:
                return StoreProblem(StoreFault.DELETED, f"{path} ({what}) was deleted")
            except OSError as exc:
                return StoreProblem(StoreFault.IO_ERROR, f"{path} cannot be checked: {exc}")
            if now != identity:
                return StoreProblem(
                    StoreFault.REPLACED,
                    f"{path} ({what}) was replaced by another file; the gateway holds the "
                    "old one open",
                )
        return None

    def _access_problem(self) -> StoreProblem | None:
        directory = self.path.parent
        if not os.access(directory, os.W_OK | os.X_OK):
            return StoreProblem(StoreFault.READ_ONLY, f"directory {directory} is not writable")
        for path in (self.path, self.wal):
            if path.exists() and not os.access(path, os.W_OK):
                return StoreProblem(StoreFault.READ_ONLY, f"{path} is not writable")
        return None

    def release(self) -> None:
        """Drop the lock (after SQLite's connection is closed)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _check_place(path: Path) -> None:
    """The path can hold a database: not a directory, its directory there
    (created 0700 if missing) and writable (SQLite creates ``-wal`` and
    ``-shm`` beside the database)."""
    if path.is_dir():
        raise StoreOpenError(f"{path} is a directory, not a database file")
    directory = path.parent
    try:
        ensure_private_dir(directory)
    except OSError as exc:
        problem = f"{path}: cannot create directory {directory} ({exc.strerror})"
        raise StoreOpenError(problem) from None
    if not directory.is_dir():
        raise StoreOpenError(f"{path}: {directory} is not a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StoreOpenError(
            f"{path}: directory {directory} is not writable (SQLite creates "
            f"{path.name}-wal and {path.name}-shm beside the database)"
        )
    if path.exists() and not os.access(path, os.W_OK):
        raise StoreOpenError(f"{path} is read-only")


def lock_holder(path: Path) -> int | None:
    """The pid holding a ``flock`` on ``path`` (Linux ``/proc/locks``), if known."""
    try:
        st = os.stat(path)
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF" ("->" marks waiters)
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted:
            return int(fields[4]) if fields[4].isdigit() else None
    return None
