"""Admin commands that are more than one API call: token rotation, backups, output files.

Approach. ``sentry admin token rotate`` writes a new token into the token
file itself (atomically, mode 0600: ``token.py``) and needs no API call to
take effect: the running gateway re-reads the file when a request's token
differs from the one it holds, so the old token is refused from the next
request on. The command then asks the gateway, with the new token, whether
it is accepted, and says so.

``sentry store backup FILE`` downloads a consistent copy of the running
gateway's database (``GET /api/store/backup``: SQLite's online backup API,
serialised with writes) into ``FILE.partial`` (mode 0600), checks that it
opens (``PRAGMA quick_check`` and its schema version), turns it into a
single self-contained file (rollback journal), and only then moves it to
``FILE`` (never over an existing file without ``--force``). ``--offline``
copies ``store.path`` directly, for a gateway that is stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from .cli_base import Builder, Render, as_handler
from .cli_client import AdminTarget, ApiFailure, TargetError, resolve_target, token_path
from .token import new_token, write_token

__all__ = ["add_store", "add_tool_commands", "check_backup", "create_output"]


def add_tool_commands(b: Builder) -> None:
    """Register ``sentry admin token rotate``."""
    group = b.top.add_parser("token", help="the admin bearer token")
    actions = group.add_subparsers(title="actions", metavar="ACTION", required=True)
    p = actions.add_parser(
        "rotate", help="write a new token; the old one is refused from the next request"
    )
    p.add_argument(
        "--config", type=Path, help="config giving admin.token_file (default: config/sentry.yaml)"
    )
    p.add_argument("--token-file", type=Path, help="the token file (default: admin.token_file)")
    p.add_argument(
        "--readonly",
        action="store_true",
        help="rotate the read-only token (admin.readonly_token_file) instead; its console "
        "sessions end too",
    )
    p.add_argument("--url", help="the admin API to check the new token against")
    p.set_defaults(handler=_rotate)


def _rotate(args: argparse.Namespace) -> int:
    from sentry.errors import CliError

    try:
        path = token_path(args.token_file, args.config, readonly=args.readonly)
    except TargetError as exc:
        raise CliError(str(exc)) from None
    token = new_token()
    try:
        write_token(path, token)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None
    which = "read-only" if args.readonly else "admin"
    print(
        f"new {which} token written to {path} (mode 0600); the old token is refused from now on "
        "and the console sessions signed in with it end"
    )
    return _confirm(args, token)


def _confirm(args: argparse.Namespace, token: str) -> int:
    try:
        target = resolve_target(
            url=args.url, token=token, token_file=None, config=args.config, actor=None
        )
        target.call("GET", "/api/preferences")
    except TargetError as exc:
        print(f"not checked against a running gateway ({exc}); it reads the file at start")
        return 0
    except ApiFailure as exc:
        print(f"sentry: error: the gateway at {target.url} refused the new token: {exc.message}")
        return 1
    print(f"the gateway at {target.url} accepts the new token")
    return 0


# --- sentry store backup ---


def add_store(subparsers: Any) -> None:
    """Register ``sentry store backup``."""
    group = subparsers.add_parser("store", help="the state store (SQLite database)")
    b = Builder(group.add_subparsers(title="actions", metavar="ACTION", required=True))
    p = b.top.add_parser(
        "backup",
        help="a consistent copy of the database, taken while the gateway runs",
        parents=[b.common],
    )
    p.add_argument("file", type=Path, help="the backup file to write (mode 0600)")
    p.add_argument("--force", action="store_true", help="replace an existing file")
    p.add_argument(
        "--offline",
        action="store_true",
        help="copy store.path of --config directly, without the admin API (e.g. gateway stopped)",
    )
    online = as_handler(_backup_online)
    p.set_defaults(handler=lambda args: _backup_offline(args) if args.offline else online(args))


def _partial(file: Path, force: bool) -> Path:
    from sentry.errors import CliError

    if file.exists() and not force:
        raise CliError(f"{file} exists; nothing was written (--force replaces it)")
    partial = file.with_name(file.name + ".partial")
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    return partial


def _backup_online(t: AdminTarget, args: argparse.Namespace) -> tuple[Any, Render]:
    partial = _partial(args.file, args.force)
    try:
        with create_output(partial) as out:
            size = t.download("/api/store/backup", out)
        version = check_backup(partial)
        _place(partial, args.file, args.force)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    answer = {"file": str(args.file), "bytes": size, "schema_version": version, "from": t.url}
    return answer, _backup_text


def _backup_text(a: Any) -> str:
    return f"backup of {a['from']}: {a['file']} ({a['bytes']} bytes, schema {a['schema_version']})"


def _backup_offline(args: argparse.Namespace) -> int:
    from sentry.errors import CliError
    from sentry.settings import SettingsError, load_settings

    try:
        settings = load_settings(args.config or Path("config/sentry.yaml"))
    except SettingsError as exc:
        raise CliError(str(exc)) from None
    if settings.store.kind == "postgresql":
        raise CliError("store.kind is postgresql: back it up with pg_dump (see README, PostgreSQL)")
    if settings.store.kind != "sqlite":
        raise CliError("store.kind: memory keeps nothing on disk to back up")
    source = Path(settings.store.path)
    partial = _partial(args.file, args.force)
    try:
        _copy(source, partial)
        version = check_backup(partial)
        _place(partial, args.file, args.force)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    print(f"backup of {source}: {args.file} (schema {version})")
    return 0


def _copy(source: Path, dest: Path) -> None:
    from sentry.errors import CliError

    if not source.is_file():
        raise CliError(f"store.path: {source} is not a database file")
    with create_output(dest):
        pass  # created 0600, empty: SQLite fills it
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        try:
            dst = sqlite3.connect(dest)
            with contextlib.closing(dst):
                src.backup(dst)
        finally:
            src.close()
    except sqlite3.Error as exc:
        raise CliError(f"store.path: {source}: {exc} (is the gateway still running?)") from None


def check_backup(path: Path) -> int:
    """Open a backup, check it (``quick_check``), make it one self-contained
    file (rollback journal); return its schema version. ``CliError`` if bad."""
    from sentry.errors import CliError

    try:
        conn = sqlite3.connect(path)
        with contextlib.closing(conn):
            (check,) = conn.execute("PRAGMA quick_check").fetchone()
            (version,) = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            conn.execute("PRAGMA journal_mode=DELETE")
    except sqlite3.Error as exc:
        raise CliError(f"the backup does not open as a Sentry database: {exc}") from None
    if check != "ok" or version is None:
        raise CliError(f"the backup failed its check: {check}")
    return int(version)


def _place(partial: Path, file: Path, force: bool) -> None:
    if force:
        os.replace(partial, file)
    else:
        os.link(partial, file)  # fails rather than replace a file made meanwhile


@contextlib.contextmanager
def create_output(path: Path, *, force: bool = False) -> Iterator[BinaryIO]:
    """A new file for private output (mode 0600); an existing one only with ``force``."""
    from sentry.errors import CliError

    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise CliError(f"{path} exists; nothing was written (--force replaces it)") from None
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "wb") as out:
        yield out
