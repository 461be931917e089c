"""A test OAuth issuer: signing keys, tokens, and a JWKS endpoint on loopback.

Approach. ``TokenIssuer`` plays the identity provider of an OAuth deployment
(Entra ID in front of Exchange Online): it makes RSA or EC key pairs with
``cryptography``, publishes their public halves as a JWKS, signs access tokens
with PyJWT, and can rotate to a new key (a new ``kid``) the way providers do.
``user_of`` verifies a token as a mail server would, so a demo backend can
accept Bearer requests (``BackendConfig(bearer=issuer.user_of)``).
``serve_jwks`` publishes the JWKS over HTTP on a free loopback port and counts
fetches, for tests of the gateway's key refresh.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

__all__ = ["JwksServer", "TokenIssuer", "serve_jwks"]

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
_CURVES = {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1(), "ES512": ec.SECP521R1()}


def _new_key(algorithm: str) -> PrivateKey:
    if algorithm in _CURVES:
        return ec.generate_private_key(_CURVES[algorithm])
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _public_jwk(key: PrivateKey, kid: str, algorithm: str) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    else:
        jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "use": "sig", "alg": algorithm}


@dataclass
class TokenIssuer:
    """An identity provider for tests: keys, a JWKS, and signed access tokens."""

    issuer: str = "https://login.test.example/tenant/v2.0"
    audience: str = "https://outlook.test.example"
    algorithm: str = "RS256"
    kid: str = "key-1"
    keys: dict[str, PrivateKey] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kid not in self.keys:
            self.keys[self.kid] = _new_key(self.algorithm)

    def rotate(self, kid: str) -> None:
        """Sign with a new key from now on (the old one stays published)."""
        self.keys[kid] = _new_key(self.algorithm)
        self.kid = kid

    def jwks(self) -> dict[str, Any]:
        """The public keys as a JWKS document."""
        return {"keys": [_public_jwk(k, kid, self.algorithm) for kid, k in self.keys.items()]}

    def jwks_bytes(self) -> bytes:
        return json.dumps(self.jwks()).encode("utf-8")

    def token(
        self,
        user: str | None,
        *,
        claim: str = "upn",
        lifetime: float = 3600.0,
        now: float | None = None,
        kid: str | None = None,
        **claims: Any,
    ) -> str:
        """A signed access token naming ``user`` in ``claim`` (None: no such claim);
        ``claims`` override or add claims (``aud``, ``iss``, ``exp``...)."""
        at = time.time() if now is None else now
        body: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "iat": int(at),
            "nbf": int(at),
            "exp": int(at + lifetime),
        }
        if user is not None:
            body[claim] = user
        body.update(claims)
        kid = kid or self.kid
        return jwt.encode(body, self.keys[kid], algorithm=self.algorithm, headers={"kid": kid})

    def user_of(self, token: str, claim: str = "upn") -> str | None:
        """The user a valid token names, verified as a mail server would; else None."""
        try:
            key = self.keys[str(jwt.get_unverified_header(token).get("kid"))]
            claims = jwt.decode(
                token,
                key.public_key(),
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
            )
        except (jwt.PyJWTError, KeyError, TypeError):
            return None
        user = claims.get(claim)
        return user if isinstance(user, str) else None

    def settings(self, **source: Any) -> dict[str, Any]:
        """The ``identity.oauth`` settings for this issuer; give ``jwks_file`` or ``jwks_url``."""
        return {
            "issuer": self.issuer,
            "audience": [self.audience],
            "algorithms": [self.algorithm],
            **source,
        }


class JwksServer:
    """A running JWKS endpoint: its URL and how often it was fetched."""

    def __init__(self, issuer: TokenIssuer) -> None:
        self.issuer = issuer
        self.fetches = 0
        self.fail = False  # answer 500 while set
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _jwks(self, request: web.Request) -> web.Response:
        self.fetches += 1
        if self.fail:
            return web.Response(status=500)
        return web.Response(body=self.issuer.jwks_bytes(), content_type="application/json")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/keys", self._jwks)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/keys"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def serve_jwks(issuer: TokenIssuer) -> JwksServer:
    """Publish ``issuer``'s JWKS on a free loopback port (stop it when done)."""
    server = JwksServer(issuer)
    await server.start()
    return server
