"""PostgreSQL errors -> ``StoreFault``: what a failure says about the store.

Approach. One table from SQLSTATE (exact code, then its two-letter class)
to a fault kind, plus the errors a driver raises without a SQLSTATE: socket
errors and timeouts (the server is down, cut off, or dropped us) and the
driver's "connection is closed" errors. Anything else (a bad statement, a
constraint) is not a fault: it propagates unchanged, as with SQLite.
``retryable`` says which faults a fresh connection may cure at once (the
connection was terminated, the server restarted): reads, and writes whose
``COMMIT`` was never sent, are retried on those, with backoff.
"""

from __future__ import annotations

import asyncio

from .base import StoreFault, StoreProblem

__all__ = ["classify", "problem_of", "retryable"]

_BY_CODE = {
    "25006": StoreFault.READ_ONLY,  # read_only_sql_transaction: a standby, or read-only mode
    "42501": StoreFault.READ_ONLY,  # insufficient_privilege: writes were revoked
    "53100": StoreFault.FULL,  # disk_full
    "53200": StoreFault.BUSY,  # out_of_memory
    "53300": StoreFault.BUSY,  # too_many_connections
    "55P03": StoreFault.BUSY,  # lock_not_available
    "57014": StoreFault.BUSY,  # query_canceled (statement_timeout)
    "57P01": StoreFault.UNREACHABLE,  # admin_shutdown (pg_terminate_backend, fast shutdown)
    "57P02": StoreFault.UNREACHABLE,  # crash_shutdown
    "57P03": StoreFault.UNREACHABLE,  # cannot_connect_now (starting, in recovery)
    "58030": StoreFault.IO_ERROR,  # io_error
    "3D000": StoreFault.REFUSED,  # invalid_catalog_name: no such database
    "XX001": StoreFault.CORRUPT,  # data_corrupted
    "XX002": StoreFault.CORRUPT,  # index_corrupted
}
_BY_CLASS = {
    "08": StoreFault.UNREACHABLE,  # connection exception
    "28": StoreFault.REFUSED,  # invalid authorization (password, pg_hba)
    "40": StoreFault.BUSY,  # transaction rollback (serialization, deadlock)
    "53": StoreFault.BUSY,  # insufficient resources
    "58": StoreFault.IO_ERROR,  # system error
}
_CLOSED = ("connection is closed", "connection was closed", "connection has been released")
# A termination notice that arrives while a query starts leaves asyncpg's protocol
# out of step ("cannot switch to state ...; another operation is in progress"):
# the connection is unusable, the pool discards it, a retry gets a fresh one.
_OUT_OF_STEP = ("another operation", "cannot switch to state")
_RETRYABLE = frozenset({StoreFault.UNREACHABLE})


def _driver_closed(exc: BaseException) -> bool:
    """The driver's own "this connection is gone" errors (no SQLSTATE)."""
    name = type(exc).__name__
    text = str(exc).lower()
    if name == "InternalClientError":
        return any(m in text for m in _OUT_OF_STEP)
    return name in ("InterfaceError", "ConnectionDoesNotExistError") and any(
        m in text for m in _CLOSED
    )


def classify(exc: BaseException) -> StoreFault | None:
    """The fault ``exc`` reveals about the store, or None."""
    code = getattr(exc, "sqlstate", None)
    if isinstance(code, str) and code:
        return _BY_CODE.get(code) or _BY_CLASS.get(code[:2])
    if isinstance(exc, OSError | asyncio.TimeoutError | TimeoutError | EOFError):
        return StoreFault.UNREACHABLE
    if _driver_closed(exc):
        return StoreFault.UNREACHABLE
    return None


def retryable(fault: StoreFault) -> bool:
    """Whether a fresh connection may succeed at once (worth a quick retry)."""
    return fault in _RETRYABLE


def problem_of(exc: BaseException, fault: StoreFault, where: str) -> StoreProblem:
    """A ``StoreProblem`` naming the server (``where``, already redacted) and the error."""
    code = getattr(exc, "sqlstate", None)
    what = str(exc).strip() or type(exc).__name__
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        what = f"timed out{': ' + str(exc) if str(exc) else ''}"
    elif isinstance(exc, OSError):
        what = f"no connection: {exc.strerror or exc}"
    detail = f"{where}: {what}" + (f" (SQLSTATE {code})" if code else "")
    return StoreProblem(fault, detail)
