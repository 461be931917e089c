"""OAuth access tokens: signing keys (JWKS) and verification, without I/O.

Approach. ``parse_jwks`` turns a JWKS document into a frozen ``KeySet`` of
public signing keys; it skips what must never verify a token (symmetric
``oct`` keys, encryption keys, keys carrying private material) so an HMAC
secret can never be confused with a public key. ``verify_token`` checks one
compact JWS with PyJWT against that set and the configured rules, with the
current time passed in (PyJWT's own clock checks are off; expiry, not-before
and issued-at are checked here against ``now`` and the leeway):

1. the header's ``alg`` must be one of the configured asymmetric algorithms
   (never ``none``, never HMAC: settings refuse them);
2. the key is chosen by ``kid`` (a token without ``kid`` only when the set has
   exactly one key of the right kind), and its type and curve must fit the
   algorithm, and its own ``alg``, when given, must be the token's;
3. signature, issuer, audience; then ``exp`` (required), ``nbf``, ``iat``;
4. the configured user claim must name someone.

Errors say which answer the device gets (see README "Authentication")::

    TokenError
    ├── InvalidToken       401 Bearer error="invalid_token": a fresh token may fix it
    │   └── UnknownKey     401 after one key refresh: no key with the token's kid
    └── TokenNotAccepted   403: well-formed but not for this gateway; a fresh one fails too
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import jwt

from sentry.settings import OAuthSettings

__all__ = [
    "InvalidToken",
    "KeySet",
    "SigningKey",
    "TokenError",
    "TokenNotAccepted",
    "TokenReason",
    "UnknownKey",
    "VerifiedToken",
    "parse_jwks",
    "verify_token",
]

MAX_JWKS_BYTES = 1024 * 1024
MAX_KEYS = 100
MAX_USER_CLAIM = 256
# Which key type (and curve) each algorithm verifies with.
_KEY_KIND: dict[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", "Ed25519"),
}
_PUBLIC_KTY = frozenset({"RSA", "EC", "OKP"})
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "k"})


class TokenReason(StrEnum):
    """Why a token was not accepted (a bounded metric label)."""

    MALFORMED = "token_malformed"
    BAD_SIGNATURE = "token_bad_signature"
    EXPIRED = "token_expired"
    NOT_YET_VALID = "token_not_yet_valid"
    UNKNOWN_KEY = "token_unknown_key"
    ALGORITHM = "token_algorithm"
    WRONG_ISSUER = "token_wrong_issuer"
    WRONG_AUDIENCE = "token_wrong_audience"
    MISSING_CLAIM = "token_missing_claim"
    NO_USER_CLAIM = "token_no_user_claim"


class TokenError(Exception):
    """A Bearer token was not accepted; ``reason`` is the metric label."""

    http_status = 401

    def __init__(self, reason: TokenReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class InvalidToken(TokenError):
    """Expired, not yet valid, badly signed or malformed: 401 invalid_token."""


class UnknownKey(InvalidToken):
    """No key of the set has the token's ``kid`` (refresh the keys, then 401)."""

    def __init__(self, message: str) -> None:
        super().__init__(TokenReason.UNKNOWN_KEY, message)


class TokenNotAccepted(TokenError):
    """Issuer, audience, algorithm or user claim not what this gateway accepts: 403."""

    http_status = 403


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One public key of a JWKS."""

    kid: str | None
    kty: str
    crv: str | None
    alg: str | None
    key: Any  # a cryptography public key object

    def fits(self, alg: str) -> bool:
        """Whether this key may verify a token signed with ``alg``."""
        kind = _KEY_KIND.get(alg)
        if kind is None or (self.alg is not None and self.alg != alg):
            return False
        kty, crv = kind
        return self.kty == kty and (crv is None or self.crv == crv)


@dataclass(frozen=True, slots=True)
class KeySet:
    """The signing keys of a JWKS and how many entries were skipped."""

    keys: tuple[SigningKey, ...]
    skipped: int = 0

    @property
    def kids(self) -> frozenset[str | None]:
        return frozenset(k.kid for k in self.keys)

    def find(self, kid: str | None, alg: str) -> SigningKey | None:
        """The key for a token header's ``kid`` and ``alg``, if any."""
        fitting = [k for k in self.keys if k.fits(alg)]
        if kid is None:
            return fitting[0] if len(fitting) == 1 else None
        return next((k for k in fitting if k.kid == kid), None)


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """What a valid token says: the user claim's value and where it came from."""

    user: str
    kid: str | None
    alg: str
    expires: float


def parse_jwks(data: bytes) -> KeySet:
    """A JWKS document (RFC 7517 §5) -> its public signing keys.

    ``ValueError`` when it is not a JWKS or holds no usable signing key.
    """
    if len(data) > MAX_JWKS_BYTES:
        raise ValueError(f"JWKS is over {MAX_JWKS_BYTES} bytes")
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"JWKS is not JSON: {exc}") from None
    entries = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or len(entries) > MAX_KEYS:
        raise ValueError(f'JWKS must be an object with a "keys" list of at most {MAX_KEYS}')
    keys = [k for k in map(_signing_key, entries) if k is not None]
    if not keys:
        raise ValueError("JWKS holds no usable public signing key")
    return KeySet(tuple(keys), skipped=len(entries) - len(keys))


def _signing_key(entry: Any) -> SigningKey | None:
    if not isinstance(entry, dict) or entry.get("kty") not in _PUBLIC_KTY:
        return None
    if entry.get("use", "sig") != "sig" or _PRIVATE_MEMBERS & entry.keys():
        return None
    kid, alg, crv = entry.get("kid"), entry.get("alg"), entry.get("crv")
    if not all(v is None or isinstance(v, str) for v in (kid, alg, crv)):
        return None
    if alg is not None and alg not in _KEY_KIND:
        return None
    try:
        key = jwt.PyJWK(entry).key
    except (jwt.PyJWTError, ValueError, TypeError):
        return None
    return SigningKey(kid, str(entry["kty"]), crv, alg, key)


def verify_token(token: str, keys: KeySet, rules: OAuthSettings, now: float) -> VerifiedToken:
    """Check ``token`` against ``keys`` and ``rules`` at time ``now`` (Unix seconds)."""
    header = _header(token)
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise InvalidToken(TokenReason.MALFORMED, "no alg in the token header")
    if alg not in rules.algorithms:
        raise TokenNotAccepted(TokenReason.ALGORITHM, f"algorithm {alg[:16]!r} not accepted")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise InvalidToken(TokenReason.MALFORMED, "kid is not a string")
    key = keys.find(kid, alg)
    if key is None:
        raise UnknownKey("no signing key for the token's kid and algorithm")
    claims = _decode(token, key, rules)
    expires = _check_times(claims, now, rules.leeway_seconds)
    user = claims.get(rules.user_claim)
    if not isinstance(user, str) or not user.strip() or len(user) > MAX_USER_CLAIM:
        raise TokenNotAccepted(TokenReason.NO_USER_CLAIM, f"no usable {rules.user_claim} claim")
    return VerifiedToken(user=user, kid=key.kid, alg=alg, expires=expires)


def _header(token: str) -> dict[str, Any]:
    try:
        return jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise InvalidToken(TokenReason.MALFORMED, "not a compact JWS") from None


def _decode(token: str, key: SigningKey, rules: OAuthSettings) -> dict[str, Any]:
    options: Any = {
        "verify_exp": False,  # checked by _check_times against the given clock
        "verify_nbf": False,
        "verify_iat": False,
        "require": ["exp", "iss", "aud"],
    }
    try:
        return jwt.decode(
            token,
            key.key,
            algorithms=list(rules.algorithms),
            audience=list(rules.audience),
            issuer=rules.issuer,
            options=options,
        )
    except jwt.InvalidSignatureError:
        raise InvalidToken(TokenReason.BAD_SIGNATURE, "signature does not verify") from None
    except jwt.InvalidIssuerError:
        raise TokenNotAccepted(TokenReason.WRONG_ISSUER, "issuer not accepted") from None
    except jwt.InvalidAudienceError:
        raise TokenNotAccepted(TokenReason.WRONG_AUDIENCE, "audience not accepted") from None
    except jwt.MissingRequiredClaimError as exc:
        raise TokenNotAccepted(TokenReason.MISSING_CLAIM, f"no {exc.claim} claim") from None
    except (jwt.PyJWTError, ValueError, TypeError):
        raise InvalidToken(TokenReason.MALFORMED, "token cannot be decoded") from None


def _number(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidToken(TokenReason.MALFORMED, f"{name} is not a number")
    return float(value)


def _check_times(claims: dict[str, Any], now: float, leeway: float) -> float:
    expires = _number(claims, "exp")
    assert expires is not None  # required above
    if now > expires + leeway:
        raise InvalidToken(TokenReason.EXPIRED, "token expired")
    for name in ("nbf", "iat"):
        at = _number(claims, name)
        if at is not None and at > now + leeway:
            raise InvalidToken(TokenReason.NOT_YET_VALID, f"token not valid yet ({name})")
    return expires
