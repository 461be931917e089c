"""PostgreSQL connection strings: check one, and show one without its secret.

Approach. ``store.dsn`` is a libpq URI (``postgresql://user@host:5432/db?...``;
the key=value form is not accepted: the driver reads URIs only). ``dsn_problem``
says what is wrong with one (for the settings error, which names the key
path); ``redact_dsn`` is what every log line, error message and API answer
shows: the password, in the authority or as a ``password=`` parameter, is
replaced by ``***``. The password itself is best kept out of the file
(``store.password_file``, ``PGPASSWORD``, ``PGPASSFILE`` / ``~/.pgpass``: the
standard libpq sources, read by the driver). Stdlib only (layer L0).
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["SCHEMES", "dsn_has_password", "dsn_problem", "redact_dsn"]

SCHEMES = ("postgresql", "postgres")
_SECRET = "***"
_SECRET_PARAMS = frozenset({"password", "sslpassword"})


def dsn_problem(dsn: str) -> str | None:
    """What is wrong with ``dsn``, or None (never repeats a password)."""
    try:
        parts = urlsplit(dsn)
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError as exc:
        return f"not a valid URI ({_clean(str(exc), dsn)})"
    if parts.scheme not in SCHEMES:
        return "must be a URI starting with postgresql:// (libpq key=value strings are not read)"
    if _stray_at(parts.path, parts.query, parts.fragment):
        return (
            "has an '@' after the host: percent-encode '/', '?', '#' and '@' in the user "
            "name and password (%2F, %3F, %23, %40)"
        )
    if parts.fragment:
        return "must not have a #fragment"
    for name, _ in parse_qsl(parts.query, keep_blank_values=True):
        if not name:
            return "has an empty query parameter name"
    return None


def dsn_has_password(dsn: str) -> bool:
    """Whether the URI itself carries a password (authority or parameter)."""
    parts = urlsplit(dsn)
    params = parse_qsl(parts.query, keep_blank_values=True)
    return parts.password is not None or any(k in _SECRET_PARAMS for k, _ in params)


def redact_dsn(dsn: str) -> str:
    """``dsn`` with every password replaced by ``***`` (safe to log)."""
    try:
        parts = urlsplit(dsn)
        if _stray_at(parts.path, parts.query, parts.fragment):
            return f"{parts.scheme}://{_SECRET}"  # a password may have spilled past the host
        netloc = parts.netloc
        if parts.password is not None:
            at = netloc.rindex("@")  # userinfo ends at the last "@" (RFC 3986 authority)
            user = netloc[:at].partition(":")[0]
            netloc = f"{user}:{_SECRET}{netloc[at:]}"
        params = parse_qsl(parts.query, keep_blank_values=True)
        query = urlencode([(k, _SECRET if k in _SECRET_PARAMS else v) for k, v in params], safe="*")
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    except ValueError:
        return "<unreadable DSN>"


def _stray_at(*parts: str) -> bool:
    """An "@" past the authority: an unencoded "/", "?" or "#" in the user part
    cut it short, so what follows may be (part of) a password."""
    return any("@" in p for p in parts)


def _clean(message: str, dsn: str) -> str:
    """An error message about ``dsn`` that cannot leak a password in it."""
    return "see store.dsn" if "@" in dsn or "password" in dsn.lower() else message
