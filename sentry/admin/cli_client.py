"""The admin CLI's HTTP side: where the API is, its token, and one JSON call.

Approach. The CLI is a thin client of the REST API (it never opens the
store), so it works against a running gateway, local or remote. The target
comes from flags first (``--url``, ``--token``, ``--token-file``,
``--cacert``), else from the configuration file (``admin.listen``,
``admin.tls`` and ``admin.token_file``, relative paths resolved against the
working directory as ``sentry run`` does). An ``https`` URL is verified
against ``--cacert`` (default: the configured ``admin.tls.cert``, trusted as
is: a self-signed certificate works). Calls use the standard library's
``urllib``; an HTTP error answer becomes ``ApiFailure`` with the API's JSON
body, a connection problem ``TargetError``. ``download`` streams a non-JSON
answer (an export, a backup) into a file.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["AdminTarget", "ApiFailure", "TargetError", "resolve_target", "token_path"]

DEFAULT_CONFIG = Path("config/sentry.yaml")
_TIMEOUT = 60.0


class TargetError(Exception):
    """The API cannot be reached or its token read (exit status 2)."""


class ApiFailure(Exception):
    """The API answered with an error status (exit status 1)."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body

    @property
    def message(self) -> str:
        if isinstance(self.body, dict) and "error" in self.body:
            return str(self.body["error"])
        return f"HTTP {self.status}"

    @property
    def fields(self) -> dict[str, str]:
        fields = self.body.get("fields") if isinstance(self.body, dict) else None
        return {str(k): str(v) for k, v in (fields or {}).items()}

    @property
    def problems(self) -> list[str]:
        """The messages of a configuration write's push problems (409)."""
        found = self.body.get("problems") if isinstance(self.body, dict) else None
        return [str(p.get("message", p)) for p in found or () if isinstance(p, dict)]


@dataclass(frozen=True)
class AdminTarget:
    """The admin API's base URL, its bearer token, and who is acting."""

    url: str
    token: str
    actor: str | None = None
    cafile: Path | None = None

    def call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        query: Mapping[str, Any] | None = None,
    ) -> Any:
        """One API call; the decoded JSON answer, or ``ApiFailure``."""
        request = urllib.request.Request(
            self.url.rstrip("/") + path + _query_string(query),
            data=None if body is None else json.dumps(body).encode("utf-8"),
            method=method,
            headers=self._headers(body is not None),
        )
        with self._open(request) as resp:
            return _decode(resp.read())

    def download(self, path: str, out: BinaryIO, query: Mapping[str, Any] | None = None) -> int:
        """GET a streamed answer into ``out``; return the number of bytes."""
        url = self.url.rstrip("/") + path + _query_string(query)
        request = urllib.request.Request(url, headers=self._headers(False))
        size = 0
        with self._open(request) as resp:
            while chunk := resp.read(1 << 16):
                out.write(chunk)
                size += len(chunk)
        return size

    def _open(self, request: urllib.request.Request) -> Any:
        try:
            return urllib.request.urlopen(request, timeout=_TIMEOUT, context=self._tls())
        except urllib.error.HTTPError as exc:
            raise ApiFailure(exc.code, _decode(exc.read())) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TargetError(f"cannot reach the admin API at {self.url}: {reason}") from None

    def _tls(self) -> ssl.SSLContext | None:
        """For https: trust ``cafile`` (a CA or the server's own certificate)."""
        if not self.url.startswith("https:"):
            return None
        try:
            ctx = ssl.create_default_context(cafile=self.cafile)
        except OSError as exc:
            raise TargetError(f"cannot read {self.cafile}: {exc.strerror or exc}") from None
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # a pinned leaf is a trust anchor
        return ctx

    def _headers(self, has_body: bool) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if has_body:
            headers["Content-Type"] = "application/json"
        if self.actor:
            headers["X-Sentry-Actor"] = self.actor
        return headers


def _query_string(query: Mapping[str, Any] | None) -> str:
    if not query:
        return ""
    pairs = {k: _text(v) for k, v in query.items() if v is not None}
    return "?" + urllib.parse.urlencode(pairs) if pairs else ""


def _text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _decode(raw: bytes) -> Any:
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {"error": raw.decode("utf-8", "replace").strip()[:200]}


def resolve_target(
    *,
    url: str | None,
    token: str | None,
    token_file: Path | None,
    config: Path | None,
    actor: str | None = None,
    cafile: Path | None = None,
) -> AdminTarget:
    """The target from flags, falling back to the configuration file."""
    settings = None
    if url is None or (token is None and token_file is None) or config is not None:
        settings = _settings(config)
    if url is None:
        assert settings is not None
        a = settings.admin
        url = _listen_url(a.listen.host, a.listen.port, a.tls.enabled)
    if cafile is None and settings is not None and settings.admin.tls.enabled:
        cafile = Path(settings.admin.tls.cert)
    if token is None:
        if token_file is None:
            assert settings is not None
            token_file = Path(settings.admin.token_file)
        token = _read_token(token_file)
    return AdminTarget(url, token, actor, cafile)


def token_path(token_file: Path | None, config: Path | None, *, readonly: bool = False) -> Path:
    """The admin token file: ``--token-file``, else ``admin.token_file`` of the
    config (``admin.readonly_token_file`` for the read-only token)."""
    if token_file is not None:
        return token_file
    admin = _settings(config).admin
    if not readonly:
        return Path(admin.token_file)
    if admin.readonly_token_file is None:
        raise TargetError("admin.readonly_token_file is not set: there is no read-only token")
    return Path(admin.readonly_token_file)


def _settings(config: Path | None) -> Any:
    from sentry.settings import SettingsError, load_settings

    path = config or DEFAULT_CONFIG
    if not path.exists():
        hint = "" if config else " (give --config, or --url with --token/--token-file)"
        raise TargetError(f"configuration file {path} not found{hint}")
    try:
        return load_settings(path)
    except SettingsError as exc:
        raise TargetError(str(exc)) from None


def _listen_url(host: str, port: int, tls: bool = False) -> str:
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{port}"


def _read_token(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise TargetError(f"cannot read the admin token {path}: {exc.strerror or exc}") from None
    if not token:
        raise TargetError(f"the admin token file {path} is empty")
    return token
