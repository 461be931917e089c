"""Read the users of an LDAP directory: ldap3, synchronous, run in a worker thread.

Approach. ``fetch(settings, root)`` is one blocking call (the service runs it
in a thread executor, never on the event loop): read the bind password from
its file, connect to the first URL that answers (``ldaps://``, ``ldap://``
with StartTLS, or a unix socket ``ldapi://``), bind, run one *paged* search
(RFC 2696 simple paged results, ``page_size`` entries a page, so a directory
of any size is read in bounded answers and a server's per-search size limit
does not cut it short), and return each entry as its DN and its requested
attributes decoded as UTF-8 (``DirectoryEntry``; an entry that cannot be
decoded carries its ``problem`` instead of failing the sync). Mapping entries
to users is pure and lives in ``policy.dirsync``.

Every failure is one ``DirectoryError`` with a bounded ``kind`` (the metric
label, ``policy.dirsync.SYNC_ERROR_KINDS``): ``config`` (the password
file), ``connect`` (no URL answered), ``timeout``, ``tls`` (handshake or
certificate), ``bind`` (credentials refused), ``search`` (the search
failed, or the answer is unusable). Messages name the server and what went
wrong, never the password.

TLS is verified by Python's own ``ssl`` (a default context: the CA file or
the system CAs, the host name of the URL checked by OpenSSL): ldap3's ``Tls``
is subclassed to wrap the socket with that context, because ldap3 turns
OpenSSL's host name check off and runs a deprecated one of its own.
Referrals are not chased (they could send the bind credentials to any host a
directory names), no schema is read, and the connection is read-only.
"""

from __future__ import annotations

import contextlib
import math
import ssl
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import ldap3
from ldap3.core import exceptions as lx

from sentry.settings_directory import LdapSettings, ldap_target

__all__ = [
    "MAX_ENTRIES",
    "DirectoryEntry",
    "DirectoryError",
    "Fetched",
    "fetch",
    "read_password",
]

MAX_ENTRIES = 1_000_000
"""More entries than this in one search is an error (a filter gone wrong)."""
MAX_VALUE_BYTES = 64 * 1024
MAX_VALUES = 1000
_PAGED = "1.2.840.113556.1.4.319"  # the simple paged results control
T = TypeVar("T")


class DirectoryError(Exception):
    """A sync could not read the directory: ``kind`` (``ERROR_KINDS``) and why."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


@dataclass(frozen=True, slots=True)
class DirectoryEntry:
    """One entry: its DN and its attributes (names lower-cased) as text values;
    ``problem`` when they could not be read (the entry is then not used)."""

    dn: str
    attributes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    problem: str | None = None

    def values(self, name: str | None) -> tuple[str, ...]:
        """The values of attribute ``name`` (any case); () when absent or unmapped."""
        return () if name is None else self.attributes.get(name.lower(), ())


@dataclass(frozen=True, slots=True)
class Fetched(Generic[T]):
    """What one read of the directory found: each entry as ``convert`` made it."""

    entries: tuple[T, ...]
    server: str
    pages: int
    seconds: float


def read_password(path: Path) -> str:
    """The bind password: the file's text without its line end. ``config``
    error when it is missing, not a regular file, empty, or open to others
    (any permission for others, or group write: 0600 or 0640 only)."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise DirectoryError("config", f"bind_password_file {path} is not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o027:
            raise DirectoryError(
                "config",
                f"bind_password_file {path} is open to others (mode {mode:04o}): chmod 600 {path}",
            )
        text = path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise DirectoryError("config", f"bind_password_file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise DirectoryError("config", f"bind_password_file {path}: not UTF-8 text") from None
    if not text:
        raise DirectoryError("config", f"bind_password_file {path} is empty")
    return text


class _VerifiedTls(ldap3.Tls):
    """ldap3's TLS with a Python ``SSLContext`` doing all the verification."""

    def __init__(self, context: ssl.SSLContext, hostname: str) -> None:
        super().__init__(validate=context.verify_mode)
        self._context, self._hostname = context, hostname
        self.failure: Exception | None = None

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        try:
            connection.socket = self._context.wrap_socket(
                connection.socket,
                server_side=False,
                do_handshake_on_connect=do_handshake,
                server_hostname=self._hostname,
            )
        except (ssl.SSLError, ssl.CertificateError, OSError) as exc:
            self.failure = exc
            raise


def _context(settings: LdapSettings, root: Path) -> ssl.SSLContext:
    ca = None if settings.ca_file is None else str(_resolve(root, settings.ca_file))
    try:
        ctx = ssl.create_default_context(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise DirectoryError("config", f"ca_file {ca}: {exc}") from None
    if not settings.tls_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _resolve(root: Path, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else root / p


def _server(url: str, settings: LdapSettings, ctx: ssl.SSLContext) -> tuple[Any, _VerifiedTls]:
    scheme, host, port = ldap_target(url)
    tls = _VerifiedTls(ctx, host)
    timeout = settings.connect_timeout_seconds
    if scheme == "ldapi":
        return ldap3.Server("ldapi://" + quote(host, safe=""), get_info=ldap3.NONE), tls
    server = ldap3.Server(
        host,
        port=port,
        use_ssl=scheme == "ldaps",
        tls=tls,
        get_info=ldap3.NONE,
        connect_timeout=timeout,
    )
    return server, tls


def _connect(url: str, settings: LdapSettings, ctx: ssl.SSLContext, password: str) -> Any:
    """An open, bound, read-only connection to ``url``."""
    server, tls = _server(url, settings, ctx)
    conn = ldap3.Connection(
        server,
        user=settings.bind_dn,
        password=password,
        auto_bind=ldap3.AUTO_BIND_NONE,
        auto_referrals=False,
        read_only=True,
        receive_timeout=math.ceil(settings.timeout_seconds),  # ldap3 packs it as an integer
        raise_exceptions=False,
    )
    try:
        conn.open(read_server_info=False)
        if settings.start_tls and not conn.start_tls(read_server_info=False):
            raise DirectoryError("tls", f"{url}: StartTLS refused: {_result(conn)}")
        if not conn.bind(read_server_info=False):
            problem = _result(conn)
            raise DirectoryError("bind", f"{url}: bind as {settings.bind_dn!r} refused: {problem}")
    except DirectoryError:
        _close(conn)
        raise
    except lx.LDAPException as exc:
        _close(conn)
        raise _classify(url, exc, tls) from None
    return conn


def _close(conn: Any) -> None:
    """Unbind and close; a connection that failed half-way may refuse even that,
    and ldap3 leaves the socket of a failed connect open: close it too."""
    with contextlib.suppress(Exception):
        conn.unbind()
    sock = getattr(conn, "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


def _classify(url: str, exc: Exception, tls: _VerifiedTls) -> DirectoryError:
    if tls.failure is not None:
        return DirectoryError("tls", f"{url}: {_reason(tls.failure)}")
    if isinstance(exc, lx.LDAPStartTLSError):
        return DirectoryError("tls", f"{url}: StartTLS failed: {exc}")
    if isinstance(exc, lx.LDAPResponseTimeoutError) or "timed out" in str(exc):
        return DirectoryError("timeout", f"{url}: no answer in time")
    return DirectoryError("connect", f"{url}: cannot connect: {_first_line(exc)}")


def _reason(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate not trusted: {exc.verify_message}"
    return f"TLS handshake failed: {_first_line(exc)}"


def _first_line(exc: Exception) -> str:
    args: tuple[Any, ...] = tuple(getattr(exc, "args", ()))
    text = str(exc)
    if len(args) > 1 and isinstance(args[1], list) and args[1]:
        text = str(args[1][-1][1])  # ldap3's "unable to open socket" keeps the causes
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _result(conn: Any) -> str:
    result = conn.result or {}
    text = str(result.get("description") or "no answer")
    message = str(result.get("message") or "").strip()
    return f"{text} ({message[:200]})" if message else text


def fetch(
    settings: LdapSettings,
    root: Path,
    convert: Callable[[DirectoryEntry], T],
    *,
    clock: Callable[[], float] = time.monotonic,
) -> Fetched[T]:
    """Read every entry the search finds (see the module comment); each is
    passed to ``convert`` as its page arrives and only the result is kept (a
    page's raw answer is dropped before the next: few objects stay alive, so
    the garbage collector has little to walk while the event loop waits on
    it). Blocking."""
    started = clock()
    password = read_password(_resolve(root, settings.bind_password_file))
    ctx = _context(settings, root)
    failures: list[DirectoryError] = []
    for url in settings.urls:
        try:
            conn = _connect(url, settings, ctx, password)
        except DirectoryError as exc:
            if exc.kind == "bind":
                raise
            failures.append(exc)
            continue
        try:
            entries, pages = _search(conn, settings, url, convert)
        finally:
            _close(conn)
        return Fetched(tuple(entries), url, pages, clock() - started)
    raise failures[-1] if len(failures) == 1 else _all_failed(failures)


def _all_failed(failures: list[DirectoryError]) -> DirectoryError:
    kinds = {f.kind for f in failures}
    kind = kinds.pop() if len(kinds) == 1 else "connect"
    return DirectoryError(kind, "; ".join(f.message for f in failures))


def _search(
    conn: Any, settings: LdapSettings, url: str, convert: Callable[[DirectoryEntry], T]
) -> tuple[list[T], int]:
    attributes = settings.attributes.requested()
    scope = ldap3.SUBTREE if settings.scope == "subtree" else ldap3.LEVEL
    entries: list[T] = []
    cookie: Any = None
    pages = 0
    while True:
        try:
            conn.search(
                settings.base_dn,
                settings.filter,
                search_scope=scope,
                attributes=attributes,
                paged_size=settings.page_size,
                paged_cookie=cookie,
            )
        except lx.LDAPException as exc:
            raise _search_error(url, exc) from None
        pages += 1
        if (conn.result or {}).get("result") != 0:
            raise DirectoryError("search", f"{url}: search failed: {_result(conn)}")
        found = conn.response or ()
        entries += [convert(_entry(item)) for item in found if item["type"] == "searchResEntry"]
        conn.response = None  # the page's raw answer (many objects): gone before the next
        if len(entries) > MAX_ENTRIES:
            raise DirectoryError("search", f"{url}: more than {MAX_ENTRIES} entries")
        controls = (conn.result or {}).get("controls") or {}
        cookie = controls.get(_PAGED, {}).get("value", {}).get("cookie")
        if not cookie:
            return entries, pages


def _search_error(url: str, exc: Exception) -> DirectoryError:
    if isinstance(exc, lx.LDAPResponseTimeoutError | lx.LDAPSocketReceiveError):
        return DirectoryError("timeout", f"{url}: no answer in time")
    if isinstance(exc, lx.LDAPCommunicationError):
        return DirectoryError("connect", f"{url}: connection lost: {_first_line(exc)}")
    return DirectoryError("search", f"{url}: search failed: {_first_line(exc)}")


def _entry(item: Mapping[str, Any]) -> DirectoryEntry:
    dn = str(item.get("dn", ""))
    out: dict[str, tuple[str, ...]] = {}
    for name, raw in (item.get("raw_attributes") or {}).items():
        values = raw if isinstance(raw, list) else [raw]
        if len(values) > MAX_VALUES:
            return DirectoryEntry(dn, problem=f"attribute {name}: more than {MAX_VALUES} values")
        try:
            out[str(name).lower()] = tuple(_text(v) for v in values)
        except ValueError as exc:
            return DirectoryEntry(dn, problem=f"attribute {name}: {exc}")
    return DirectoryEntry(dn, out)


def _text(value: Any) -> str:
    data = value if isinstance(value, bytes) else str(value).encode("utf-8")
    if len(data) > MAX_VALUE_BYTES:
        raise ValueError(f"a value over {MAX_VALUE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("a value that is not UTF-8 text") from None
