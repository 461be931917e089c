"""pytest fixtures for a real PostgreSQL (loaded by ``tests/conftest.py``).

Approach. One server per test run (``server_dsn``: ``SENTRY_TEST_POSTGRES_DSN``,
else a ``ThrowawayServer``), one database of its own per test process
(``pg_database``: a unique name, dropped at the end, so parallel runs never
meet), emptied before every test that asks for ``pg_dsn``. Without a server
the tests are skipped with the reason shown in pytest's summary; with
``SENTRY_REQUIRE_POSTGRES=1`` (CI) that skip is a failure instead.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from .postgres import (
    ENV_DSN,
    ENV_REQUIRE,
    Databases,
    ThrowawayServer,
    find_binary,
    unavailable_reason,
)

__all__ = [
    "THROWAWAY_PASSWORD",
    "pg_database",
    "pg_dsn",
    "pg_server_dsn",
    "pg_throwaway",
    "require_binaries",
    "require_postgres",
    "run_sync",
]

THROWAWAY_PASSWORD = "s3cret-for-tests"
"""The superuser's password on ``pg_throwaway`` (SCRAM: passwords are checked)."""

T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a loop of its own, in a thread (callable
    from sync fixtures whether or not an event loop is running here)."""
    out: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            out.append(asyncio.run(coro))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="pg-fixture")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return out[0]


def require_postgres() -> None:
    """Skip (or, with ``SENTRY_REQUIRE_POSTGRES=1``, fail) without a server."""
    reason = unavailable_reason()
    if reason is None:
        return
    if os.environ.get(ENV_REQUIRE) == "1":
        pytest.fail(f"{ENV_REQUIRE}=1 but {reason}")
    pytest.skip(reason)


def require_binaries() -> None:
    """Skip (or fail, as above) without ``initdb``/``pg_ctl``: the tests that stop
    and start a server need one of their own."""
    missing = [b for b in ("initdb", "pg_ctl") if find_binary(b) is None]
    if not missing:
        return
    reason = f"no throwaway PostgreSQL server: {', '.join(missing)} not found"
    if os.environ.get(ENV_REQUIRE) == "1":
        pytest.fail(f"{ENV_REQUIRE}=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def _throwaway_cluster() -> Iterator[ThrowawayServer]:
    require_binaries()
    server = ThrowawayServer(password=THROWAWAY_PASSWORD).init()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def pg_throwaway(_throwaway_cluster: ThrowawayServer) -> ThrowawayServer:
    """A server of the run's own that a test may stop and start (running at the
    start of each test; password authentication with ``THROWAWAY_PASSWORD``)."""
    if not _throwaway_cluster.running:
        _throwaway_cluster.start()
    return _throwaway_cluster


@pytest.fixture(scope="session")
def pg_server_dsn() -> Iterator[str]:
    """The superuser URI of the run's server."""
    require_postgres()
    given = os.environ.get(ENV_DSN)
    if given:
        yield given
        return
    server = ThrowawayServer().init()
    try:
        server.start()
        yield server.dsn
    finally:
        server.remove()


@pytest.fixture(scope="session")
def pg_database(pg_server_dsn: str) -> Iterator[Databases]:
    """This process's databases on the run's server (dropped at the end)."""
    databases = Databases(pg_server_dsn)
    try:
        yield databases
    finally:
        run_sync(databases.drop_all())


_SHARED: dict[int, str] = {}


@pytest.fixture
def pg_dsn(pg_database: Databases) -> str:
    """The URI of an empty database (this process's, emptied for the test)."""
    dsn = _SHARED.get(id(pg_database))
    if dsn is None:
        dsn = _SHARED[id(pg_database)] = run_sync(pg_database.create())
    else:
        run_sync(pg_database.reset(dsn))
    return dsn
