"""Real PostgreSQL servers and databases for tests and benchmarks.

Approach. ``ThrowawayServer`` makes a cluster of its own with ``initdb`` and
runs it with ``pg_ctl`` (found on PATH or under /usr/lib/postgresql/*/bin),
listening on a Unix socket only, in a fresh directory: no TCP port, so two
test processes never collide and nothing outside can reach it. ``initdb``
refuses to run as root, so as root the cluster is made and run as the
``postgres`` user (``runuser``). It can be stopped and started again (the
store's "server down" tests), and optionally requires a password (SCRAM) so
the password sources can be tested for real.

``server_dsn()`` picks the server for a test run: ``SENTRY_TEST_POSTGRES_DSN``
when set (the machine's server; CI sets it), else a throwaway server when the
binaries exist, else None with the reason (``unavailable_reason``).
``Databases`` creates uniquely named databases on a server (``sentry_test_<pid>_<random>``)
and drops them at the end, and ``reset`` empties one between tests (drop and
recreate the ``public`` schema: far cheaper than a new database).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

__all__ = [
    "ENV_DSN",
    "ENV_REQUIRE",
    "Databases",
    "ThrowawayServer",
    "find_binary",
    "unavailable_reason",
    "with_database",
]

ENV_DSN = "SENTRY_TEST_POSTGRES_DSN"
ENV_REQUIRE = "SENTRY_REQUIRE_POSTGRES"


def find_binary(name: str) -> str | None:
    """``name`` on PATH, else the newest /usr/lib/postgresql/<version>/bin/<name>."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return candidates[-1] if candidates else None


def with_database(dsn: str, database: str) -> str:
    """``dsn`` naming another database (path part replaced, query kept)."""
    head, sep, query = dsn.partition("?")
    base = head.rsplit("/", 1)[0] if head.count("/") > 2 else head
    return f"{base}/{quote(database)}{sep}{query}"


class ThrowawayServer:
    """A PostgreSQL cluster in a temporary directory, on a Unix socket only."""

    def __init__(self, password: str | None = None) -> None:
        self.password = password
        self.dir = Path(tempfile.mkdtemp(prefix="sentry-pg-"))  # short: socket paths are limited
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self._user = _run_as()
        self.running = False

    @property
    def dsn(self) -> str:
        """The superuser's URI (``postgres`` database) over the socket."""
        auth = "postgres" if self.password is None else f"postgres:{quote(self.password)}"
        return f"postgresql://{auth}@/postgres?host={quote(str(self.dir))}&port=5432"

    def init(self) -> ThrowawayServer:
        initdb = find_binary("initdb")
        if initdb is None:
            raise RuntimeError("initdb not found")
        args = [initdb, "-D", str(self.data), "-U", "postgres", "-E", "UTF8", "--no-sync"]
        if self.password is not None:
            pwfile = self.dir / "pw"
            pwfile.write_text(self.password + "\n")
            self._own(pwfile)
            args += ["--auth=scram-sha-256", f"--pwfile={pwfile}"]
        else:
            args += ["--auth=trust"]
        self._own(self.dir)
        self._run(args)
        return self

    def start(self) -> None:
        options = (
            f"-c listen_addresses='' -c unix_socket_directories='{self.dir}' "
            "-c fsync=off -c full_page_writes=off -c max_connections=50"
        )
        self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.log), "-o", options)
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("stop", "-w", "-t", "60", "-m", mode)
        self.running = False

    def remove(self) -> None:
        if self.running:
            with contextlib.suppress(subprocess.CalledProcessError):
                self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def _pg_ctl(self, *args: str) -> None:
        pg_ctl = find_binary("pg_ctl")
        if pg_ctl is None:
            raise RuntimeError("pg_ctl not found")
        self._run([pg_ctl, "-D", str(self.data), *args])

    def _run(self, args: list[str]) -> None:
        prefix = [] if self._user is None else ["runuser", "-u", self._user, "--"]
        subprocess.run(
            [*prefix, *args], check=True, capture_output=True, text=True, timeout=120, cwd=self.dir
        )

    def _own(self, path: Path) -> None:
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(path, entry.pw_uid, entry.pw_gid)


def _run_as() -> str | None:
    """The user to run the server as: ourselves, or ``postgres`` when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError("running as root and there is no 'postgres' user for initdb") from None
    return "postgres"


def unavailable_reason() -> str | None:
    """Why no PostgreSQL server can be had for tests, or None."""
    if os.environ.get(ENV_DSN):
        return None
    missing = [b for b in ("initdb", "pg_ctl") if find_binary(b) is None]
    if missing:
        return f"no PostgreSQL: {ENV_DSN} is not set and {', '.join(missing)} not found"
    return None


_EMPTY_TABLES = """
DO $$
DECLARE t text;
BEGIN
    FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = 'public'
             AND tablename NOT IN ('schema_version', 'change_feed_pruned') LOOP
        EXECUTE format('DELETE FROM %I', t);
    END LOOP;
    UPDATE change_feed_pruned SET through = 0;
END $$
"""


class Databases:
    """Uniquely named databases on one server, dropped by ``drop_all``."""

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self.names: list[str] = []

    async def create(self) -> str:
        """A new empty database; its URI."""
        name = f"sentry_test_{os.getpid()}_{secrets.token_hex(4)}"
        await self._admin(f'CREATE DATABASE "{name}"')
        self.names.append(name)
        return with_database(self.admin_dsn, name)

    async def reset(self, dsn: str) -> None:
        """Empty a database made here. At the current schema version its rows are
        deleted (fast: the tables are small); anything else (a test that changed the
        schema) gets a new ``public`` schema, so the store migrates from scratch."""
        import asyncpg

        from sentry.store._pg_schema import SCHEMA_VERSION

        conn = await asyncpg.connect(dsn)
        try:
            versions = await conn.fetch(
                "SELECT version FROM schema_version"
                if await conn.fetchval("SELECT to_regclass('public.schema_version')")
                else "SELECT 0 AS version WHERE false"
            )
            if [r[0] for r in versions] == list(range(1, SCHEMA_VERSION + 1)):
                await conn.execute(_EMPTY_TABLES)
            else:
                await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        finally:
            await conn.close()

    async def drop_all(self) -> None:
        while self.names:
            name = self.names.pop()
            await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    async def _admin(self, sql: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()
