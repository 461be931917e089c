"""Checks of the files a configuration points at, before anything is served.

Approach. ``sentry run`` and ``sentry run --check`` run the same checks, so
``--check`` passing means the start will not fail on them. Each check looks
at one configured file (the device and admin certificates and keys, the log
file, the store, the admin token, the OAuth key file) and reports problems as ``StartupError``
(the setting's key path and what is wrong) and warnings as text. ``Preflight``
collects them all rather than stopping at the first, so ``--check`` shows
every problem at once; ``raise_first`` is what a start does.

With ``create=True`` (a real start) a certificate pair is generated when
neither file exists; ``--check`` creates nothing and only says it will be.
Nothing here opens the store: a running gateway may hold it.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sentry.certs import CertFileError, cert_warnings, ensure_certificate, load_pair
from sentry.dsn import dsn_has_password
from sentry.errors import StartupError
from sentry.files import loose_mode
from sentry.settings import LoggingSettings, Settings, StoreSettings, TlsSettings

__all__ = ["Preflight", "check_log_file", "check_store_path", "preflight", "resolve"]

SQLITE_HEADER = b"SQLite format 3\x00"


@dataclass
class Preflight:
    """What the checks found: problems stop a start, warnings do not."""

    problems: list[StartupError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    generated: list[str] = field(default_factory=list)  # "<key>: <file>" made by the check

    def raise_first(self) -> None:
        """Raise the first problem, if any (what a start does)."""
        if self.problems:
            raise self.problems[0]


def resolve(root: Path, path: str) -> Path:
    """A configured path: absolute as given, else relative to ``root``."""
    p = Path(path)
    return p if p.is_absolute() else root / p


def preflight(settings: Settings, root: Path, *, create: bool) -> Preflight:
    """Run every check of ``settings``' files (see the module comment)."""
    report = Preflight()
    g = settings.gateway
    if g.tls.enabled:
        _check_tls(report, "gateway.tls", g.tls, g.fqdn, root, create)
    if settings.admin.tls.enabled:
        _check_tls(report, "admin.tls", settings.admin.tls, g.fqdn, root, create)
    checks: list[Callable[[], None]] = [
        lambda: check_log_file(settings.logging, root),
        lambda: check_store_path(settings.store, root),
        lambda: _check_password_file(settings.store, root, report),
        lambda: _check_token_file(resolve(root, settings.admin.token_file)),
        lambda: _check_readonly_token_file(settings, root),
        lambda: _check_jwks_file(settings, root),
        lambda: _check_directory(settings, root),
    ]
    for check in checks:
        try:
            check()
        except StartupError as exc:
            report.problems.append(exc)
    return report


def _check_tls(
    report: Preflight, prefix: str, tls: TlsSettings, fqdn: str, root: Path, create: bool
) -> None:
    cert, key = resolve(root, tls.cert), resolve(root, tls.key)
    try:
        if not create and not os.path.lexists(cert) and not os.path.lexists(key):
            report.warnings.append(
                f"{prefix}.cert: {cert} and {key} do not exist; "
                f"a self-signed pair for {fqdn!r} will be made at start"
            )
            return
        if ensure_certificate(cert, key, fqdn):  # creates only when neither exists
            report.generated.append(f"{prefix}.cert: {cert}")
        loaded = load_pair(cert, key)
    except CertFileError as exc:
        report.problems.append(StartupError(f"{prefix}.{exc.role}", str(exc)))
        return
    now = dt.datetime.now(dt.UTC)
    report.warnings += [
        f"{prefix}.cert: {cert}: {w}" for w in cert_warnings(loaded.cert, fqdn, now)
    ]


def check_log_file(settings: LoggingSettings, root: Path) -> None:
    """``logging.file``: its directory exists and the file can be appended to."""
    if settings.file is None:
        return
    path = resolve(root, settings.file)
    if path.is_dir():
        raise StartupError("logging.file", f"{path} is a directory")
    if not path.parent.is_dir():
        raise StartupError("logging.file", f"directory {path.parent} does not exist")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise StartupError("logging.file", f"{path}: not writable")
    elif not os.access(path.parent, os.W_OK | os.X_OK):
        raise StartupError("logging.file", f"cannot create files in {path.parent}")


def check_store_path(settings: StoreSettings, root: Path) -> None:
    """``store.path`` (SQLite): not a directory, a database if it exists, and
    its directory can be created or written. The file is not opened as a
    database (a running gateway holds it). Never call this in a process that
    has the store open: closing any descriptor of the file drops the POSIX
    locks SQLite holds on it."""
    if settings.kind != "sqlite":
        return
    path = resolve(root, settings.path)
    if path.is_dir():
        raise StartupError("store.path", f"{path} is a directory, not a database file")
    if path.exists():
        _check_database_file(path)
        return
    parent = _existing_parent(path)
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise StartupError("store.path", f"cannot create {path}: {parent} is not writable")


def _check_password_file(settings: StoreSettings, root: Path, report: Preflight) -> None:
    """``store.password_file`` (PostgreSQL): a readable file, not readable by
    others (a warning); and a warning when ``store.dsn`` itself holds a password."""
    if settings.kind != "postgresql":
        return
    if settings.dsn is not None and dsn_has_password(settings.dsn):
        report.warnings.append(
            "store.dsn: the URI holds a password; keep it out of the file "
            "(store.password_file, PGPASSWORD or PGPASSFILE / ~/.pgpass)"
        )
    if settings.password_file is None:
        return
    path = resolve(root, settings.password_file)
    if path.is_dir() or not path.exists():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise StartupError("store.password_file", f"{path} {what}")
    if not os.access(path, os.R_OK):
        raise StartupError("store.password_file", f"{path}: not readable")
    mode = loose_mode(path)
    if mode is not None:
        report.warnings.append(
            f"store.password_file: {path} is readable by others (mode {mode:04o}): chmod 600 {path}"
        )


def _check_database_file(path: Path) -> None:
    if not path.is_file():
        raise StartupError("store.path", f"{path} is not a regular file")
    try:
        with path.open("rb") as fh:
            head = fh.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise StartupError("store.path", f"{path}: cannot read: {exc.strerror}") from None
    if head and head != SQLITE_HEADER:
        raise StartupError("store.path", f"{path} is not an SQLite database")
    if not os.access(path, os.W_OK):
        raise StartupError("store.path", f"{path}: not writable")


def _existing_parent(path: Path) -> Path:
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent


def _check_token_file(path: Path, key: str = "admin.token_file") -> None:
    if path.is_dir():
        raise StartupError(key, f"{path} is a directory")
    if path.exists() and not os.access(path, os.R_OK):
        raise StartupError(key, f"{path}: not readable")


def _check_readonly_token_file(settings: Settings, root: Path) -> None:
    """``admin.readonly_token_file``, when set: like the admin token's file."""
    name = settings.admin.readonly_token_file
    if name is not None:
        _check_token_file(resolve(root, name), "admin.readonly_token_file")


def _check_jwks_file(settings: Settings, root: Path) -> None:
    """``identity.oauth.jwks_file``, when set, is a readable file (its keys are
    parsed at start by the OAuth validator, which names the same setting)."""
    oauth = settings.identity.oauth
    if oauth is None or oauth.jwks_file is None:
        return
    path = resolve(root, oauth.jwks_file)
    if not path.is_file():
        raise StartupError("identity.oauth.jwks_file", f"{path} is not a file")
    if not os.access(path, os.R_OK):
        raise StartupError("identity.oauth.jwks_file", f"{path}: not readable")


def _check_directory(settings: Settings, root: Path) -> None:
    """``directory.ldap``: the bind password file is a private, non-empty file
    (0600 or 0640; read again at every sync), and ``ca_file`` a readable file."""
    from sentry.directory.ldap import DirectoryError, read_password

    ldap = settings.directory.ldap
    if ldap is None:
        return
    try:
        read_password(resolve(root, ldap.bind_password_file))
    except DirectoryError as exc:
        problem = exc.message.removeprefix("bind_password_file ")
        raise StartupError("directory.ldap.bind_password_file", problem) from None
    if ldap.ca_file is not None:
        path = resolve(root, ldap.ca_file)
        if not path.is_file() or not os.access(path, os.R_OK):
            raise StartupError("directory.ldap.ca_file", f"{path} is not a readable file")
