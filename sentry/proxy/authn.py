"""The identity step of the EAS handler: one authenticated identity per request.

Approach. Right after parsing, ``Authenticator.check`` reads the request's one
``Authorization`` header (``sentry.eas.credentials``) and replaces the
parser's user with the identity the credentials prove, so the decision is
keyed on nothing a client can claim without authenticating:

* Basic: the user name of the header (the backend checks the password);
* Bearer: the configured claim of a token validated against the issuer's
  keys (``tokens.py``, keys from ``oauth.py``); refused when OAuth is not
  configured;
* a query ``User`` naming another principal than the credentials: 400;
* two Authorization headers: 400; no credentials on a POST, or a scheme the
  gateway cannot check (NTLM, Negotiate...): 401 with the challenges it
  accepts; OPTIONS may come without credentials (capability discovery).

A verified token is remembered (bounded, least recently used out) with the key
set that verified it: the same token again skips the signature check (a
public-key operation per request) but never the expiry check, and a new key
set forgets everything.

The header is not rewritten: what the backend receives is exactly the one
value this step read. Every refusal is answered here (never forwarded),
counted in ``sentry_auth_refusals{scheme,reason}`` and logged as
``auth_refused``; neither the header nor the token is ever logged.

Refusal answers (README "Authentication" explains the choice):

    duplicate or malformed header, User mismatch     400
    no credentials, unsupported scheme               401 + Basic (and Bearer) challenge
    token expired, not yet valid, badly signed,      401 + Bearer error="invalid_token"
      signed by an unknown key, malformed
    OAuth not configured; token of another issuer,   403 (a fresh token fails the same way)
      audience or algorithm; no usable user claim
    signing keys not loaded                          503 + Retry-After
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import structlog
from aiohttp import web

from sentry.eas import responses
from sentry.eas.credentials import (
    Authorization,
    Scheme,
    basic_identity,
    check_query_user,
    principal,
    read_authorization,
)
from sentry.eas.errors import RequestError
from sentry.eas.identity import Identity
from sentry.eas.request import EasRequest
from sentry.model import NO_REALMS, Realms
from sentry.observability import Metrics
from sentry.observability import context as logcontext
from sentry.policy import Snapshot
from sentry.settings import IdentitySettings

from .h1message import DeviceRequest
from .oauth import JwksSource
from .tokens import (
    InvalidToken,
    KeySet,
    TokenError,
    TokenReason,
    UnknownKey,
    VerifiedToken,
    verify_token,
)

__all__ = ["AuthRefused", "Authenticator"]

log = structlog.get_logger("sentry.authn")
KEYS_RETRY_AFTER = 30
VERIFIED_TOKENS = 4096  # remembered verified tokens


class AuthRefused(Exception):
    """The request is answered by the gateway with ``status`` (never forwarded)."""

    def __init__(
        self, status: int, reason: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.headers = headers or {}


class Authenticator:
    """Checks credentials; owns the OAuth key source when OAuth is configured."""

    def __init__(
        self,
        fqdn: str,
        settings: IdentitySettings,
        metrics: Metrics,
        *,
        root: Path = Path("."),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.oauth = settings.oauth
        self.metrics = metrics
        self.clock = clock
        self.jwks = None if self.oauth is None else JwksSource(self.oauth, metrics, root=root)
        self._realm = f'realm="{fqdn}"'
        self._verified: OrderedDict[str, tuple[KeySet, VerifiedToken]] = OrderedDict()

    async def start(self) -> None:
        """Load the signing keys (``JwksError`` when a key file cannot be read)."""
        if self.jwks is not None:
            await self.jwks.start()

    async def close(self) -> None:
        if self.jwks is not None:
            await self.jwks.close()

    async def check(
        self,
        request: DeviceRequest,
        eas: EasRequest,
        names: Snapshot | None = None,
    ) -> EasRequest | web.Response:
        """``eas`` with its user replaced by the authenticated identity, or the
        answer to send instead (400/401/403/503). ``names`` (the live snapshot)
        gives the realms every name is canonical under and the directory's
        known names, so a query ``User`` that is the user's email or alias agrees."""
        realms = NO_REALMS if names is None else names.realms
        resolve = None if names is None else names.principal_of
        values = request.headers.getall("Authorization", ())
        scheme = "multiple" if len(values) > 1 else Scheme.NONE.value
        try:
            auth = read_authorization(values, realms)
            scheme = auth.scheme.value
            identity = await self._identity(auth, eas, realms)
            if identity is None:
                return eas
            check_query_user(identity, eas.query_user, realms, resolve)
        except RequestError as exc:
            reason = type(exc).__name__
            self.metrics.bad_requests.labels(f"auth:{reason}").inc()
            self._refused(scheme, _snake(reason), 400, exc.message)
            return _to_web(responses.bad_request(exc))
        except AuthRefused as exc:
            self._refused(scheme, exc.reason, exc.status, exc.message)
            return _answer(exc)
        logcontext.note(auth=scheme)
        if identity == eas.user:  # the usual case: the parser read the same Basic name
            return eas
        return replace(eas, user=identity)

    async def _identity(
        self, auth: Authorization, eas: EasRequest, realms: Realms
    ) -> Identity | None:
        if auth.scheme is Scheme.BASIC:
            return basic_identity(auth, realms)
        if auth.scheme is Scheme.BEARER:
            return await self._bearer(auth, realms)
        if auth.scheme is Scheme.NONE and eas.command is None:
            return None  # OPTIONS: capability discovery needs no credentials
        reason = "missing_credentials" if auth.scheme is Scheme.NONE else "unsupported_scheme"
        raise AuthRefused(401, reason, "authentication required", self._challenges())

    async def _bearer(self, auth: Authorization, realms: Realms) -> Identity:
        if self.oauth is None or self.jwks is None:
            raise AuthRefused(403, "oauth_not_configured", "Bearer tokens are not accepted here")
        assert auth.token is not None
        try:
            verified = await self._verify(auth.token)
        except InvalidToken as exc:
            raise AuthRefused(401, exc.reason.value, exc.message, self._invalid_token()) from None
        except TokenError as exc:
            raise AuthRefused(exc.http_status, exc.reason.value, exc.message) from None
        identity = principal(verified.user, "token", realms)
        if identity is None:
            raise AuthRefused(403, "token_no_user_claim", "the user claim names no user")
        return identity

    async def _verify(self, token: str) -> VerifiedToken:
        assert self.oauth is not None and self.jwks is not None
        if self.jwks.keys is None and not await self.jwks.refresh():
            raise AuthRefused(
                503, "keys_unavailable", "token signing keys are not available",
                {"Retry-After": str(KEYS_RETRY_AFTER)},
            )  # fmt: skip
        keys, now = self.jwks.keys, self.clock()
        assert keys is not None
        known = self._remembered(token, keys, now)
        if known is not None:
            return known
        try:
            verified = verify_token(token, keys, self.oauth, now)
        except UnknownKey:
            if not await self.jwks.refresh() or self.jwks.keys is None:
                raise
            keys = self.jwks.keys
            verified = verify_token(token, keys, self.oauth, self.clock())
        self._verified[token] = (keys, verified)
        if len(self._verified) > VERIFIED_TOKENS:
            self._verified.popitem(last=False)
        return verified

    def _remembered(self, token: str, keys: KeySet, now: float) -> VerifiedToken | None:
        """A token verified before with the current keys; expiry is checked again."""
        assert self.oauth is not None
        hit = self._verified.get(token)
        if hit is None:
            return None
        if hit[0] is not keys:
            del self._verified[token]
            return None
        if now > hit[1].expires + self.oauth.leeway_seconds:
            del self._verified[token]
            raise InvalidToken(TokenReason.EXPIRED, "token expired")
        self._verified.move_to_end(token)
        return hit[1]

    def _challenges(self) -> dict[str, str]:
        # One header; RFC 9110 §11.6.1 allows several challenges in one field.
        challenges = [f"Basic {self._realm}"]
        if self.oauth is not None:
            challenges.append(f"Bearer {self._realm}")
        return {"WWW-Authenticate": ", ".join(challenges)}

    def _invalid_token(self) -> dict[str, str]:
        return {"WWW-Authenticate": f'Bearer {self._realm}, error="invalid_token"'}

    def _refused(self, scheme: str, reason: str, status: int, message: str) -> None:
        """Count and log a refusal; the request's context (request id, device,
        user as sent) is on the line already (``handler.serve_device``)."""
        self.metrics.auth_refusals.labels(scheme, reason).inc()
        logcontext.note(
            decision="auth_refused" if status != 400 else "bad_request", auth=scheme, error=message
        )
        log.info("auth_refused", scheme=scheme, reason=reason, status=status)


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def _answer(exc: AuthRefused) -> web.Response:
    """The device-facing answer of a refusal: status, challenge or Retry-After, one
    line, with the server headers every gateway answer carries (``responses.error``)."""
    return _to_web(responses.error(exc.status, exc.message, tuple(exc.headers.items())))


def _to_web(resp: responses.Response) -> web.Response:
    return web.Response(
        status=resp.status, reason=resp.reason, headers=resp.headers, body=resp.body
    )
