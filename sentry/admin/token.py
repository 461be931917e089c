"""The admin bearer token: made on first start, rotated in place, re-read when it changes.

Approach. The token lives in one file (``admin.token_file``, mode 0600). It is
always written whole, to a temporary file in the same directory that is then
renamed over the old one, so a reader sees the old token or the new one,
never a mix or an empty file. ``sentry admin token rotate`` does exactly that
and nothing else: it needs no connection to the gateway.

The running gateway holds the token in a ``TokenFile``. A request whose token
does not match the one held makes it look at the file (one ``stat``): if the
file changed since it was read, it is read again and the request compared
with the new token. So a rotation takes effect on the next request, the old
token is refused from then on, and no restart or signal is needed (SIGHUP
re-reads it too). An empty or unreadable file keeps the token held.
"""

from __future__ import annotations

import hmac
import os
import secrets
import tempfile
from pathlib import Path

__all__ = ["TokenFile", "ensure_token", "new_token", "read_token", "write_token"]


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe).

    Never starts with ``-``: ``sentry admin --token TOKEN`` would otherwise read
    it as an option (argparse), about one token in 64.
    """
    while True:
        token = secrets.token_urlsafe(32)
        if not token.startswith("-"):
            return token


def read_token(path: Path) -> str | None:
    """The token in ``path``; None when the file is missing or empty."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return token or None


def write_token(path: Path, token: str) -> None:
    """Replace ``path`` atomically with ``token`` (mode 0600, directory 0700 when made)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(token + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def ensure_token(path: Path) -> str:
    """The token in ``path``, creating the file (mode 0600) on first run."""
    token = read_token(path)
    if token is None:
        token = new_token()
        write_token(path, token)
    return token


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class TokenFile:
    """The token the API accepts, kept in step with its file (see the module comment)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._token = ensure_token(path)
        self._seen = _signature(path)

    @property
    def token(self) -> str:
        """The token currently accepted."""
        return self._token

    def current(self) -> str:
        """The token now in the file (re-read when the file changed; one ``stat``)."""
        if _signature(self.path) != self._seen:
            self.reload()
        return self._token

    def matches(self, given: str) -> bool:
        """Whether ``given`` is the token (constant-time), re-reading a changed file."""
        if self._equal(given):
            return True
        if _signature(self.path) == self._seen:
            return False
        self.reload()
        return self._equal(given)

    def reload(self) -> bool:
        """Read the file again; return True when the token changed."""
        self._seen = _signature(self.path)
        try:
            token = read_token(self.path)
        except OSError:
            return False
        if token is None or token == self._token:
            return False
        self._token = token
        return True

    def _equal(self, given: str) -> bool:
        return hmac.compare_digest(given.encode("utf-8"), self._token.encode("utf-8"))
