"""sentry.proxy.tokens: JWKS parsing and token verification (no I/O, time passed in)."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from sentry.proxy.tokens import (
    InvalidToken,
    KeySet,
    TokenNotAccepted,
    TokenReason,
    UnknownKey,
    parse_jwks,
    verify_token,
)
from sentry.settings import OAuthSettings
from sentry.testing.oauth import TokenIssuer

NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def issuer() -> TokenIssuer:
    return TokenIssuer()


def rules(issuer: TokenIssuer, **over: Any) -> OAuthSettings:
    base: dict[str, Any] = {
        "issuer": issuer.issuer,
        "audience": (issuer.audience,),
        "algorithms": (issuer.algorithm,),
        "jwks_file": "x",
    }
    return OAuthSettings(**(base | over))


def keys(issuer: TokenIssuer) -> KeySet:
    return parse_jwks(issuer.jwks_bytes())


def test_a_valid_token_names_its_user(issuer: TokenIssuer) -> None:
    token = issuer.token("alice@example.com", now=NOW)
    verified = verify_token(token, keys(issuer), rules(issuer), NOW + 10)
    assert (verified.user, verified.kid, verified.alg) == ("alice@example.com", "key-1", "RS256")


@pytest.mark.parametrize("algorithm", ["ES256", "ES384", "PS256"])
def test_other_asymmetric_algorithms(algorithm: str) -> None:
    other = TokenIssuer(algorithm=algorithm)
    token = other.token("bob", now=NOW)
    assert verify_token(token, keys(other), rules(other), NOW).user == "bob"


def test_the_user_claim_is_configurable(issuer: TokenIssuer) -> None:
    token = issuer.token("carol@example.com", claim="preferred_username", now=NOW)
    r = rules(issuer, user_claim="preferred_username")
    assert verify_token(token, keys(issuer), r, NOW).user == "carol@example.com"
    with pytest.raises(TokenNotAccepted) as caught:
        verify_token(token, keys(issuer), rules(issuer), NOW)  # no upn claim
    assert caught.value.reason is TokenReason.NO_USER_CLAIM and caught.value.http_status == 403


@pytest.mark.parametrize(
    ("offset", "reason"),
    [(3600 + 61, TokenReason.EXPIRED), (-61, TokenReason.NOT_YET_VALID)],
)
def test_times_are_checked_against_the_given_clock_with_leeway(
    issuer: TokenIssuer, offset: float, reason: TokenReason
) -> None:
    token = issuer.token("alice", now=NOW, lifetime=3600)
    with pytest.raises(InvalidToken) as caught:
        verify_token(token, keys(issuer), rules(issuer), NOW + offset)
    assert caught.value.reason is reason and caught.value.http_status == 401
    within = NOW + (3600 + 59 if offset > 0 else -59)
    assert verify_token(token, keys(issuer), rules(issuer), within).user == "alice"


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"iss": "https://evil.example/"}, TokenReason.WRONG_ISSUER),
        ({"aud": "https://other.example"}, TokenReason.WRONG_AUDIENCE),
        ({"exp": None}, TokenReason.MISSING_CLAIM),
    ],
)
def test_tokens_for_another_party_are_not_accepted(
    issuer: TokenIssuer, claims: dict[str, Any], reason: TokenReason
) -> None:
    body = {k: v for k, v in claims.items() if v is not None}
    token = issuer.token("alice", now=NOW, **body)
    if "exp" in claims:
        payload = jwt.decode(token, options={"verify_signature": False})
        del payload["exp"]
        token = jwt.encode(payload, issuer.keys["key-1"], "RS256", headers={"kid": "key-1"})
    with pytest.raises(TokenNotAccepted) as caught:
        verify_token(token, keys(issuer), rules(issuer), NOW)
    assert caught.value.reason is reason


def test_bad_signature_and_garbage_are_invalid(issuer: TokenIssuer) -> None:
    token = issuer.token("alice", now=NOW)
    head, body, sig = token.split(".")
    forged_body = (
        base64.urlsafe_b64encode(
            json.dumps(
                {**jwt.decode(token, options={"verify_signature": False}), "upn": "bob"}
            ).encode()
        )
        .rstrip(b"=")
        .decode()
    )
    for bad, reason in [
        (f"{head}.{forged_body}.{sig}", TokenReason.BAD_SIGNATURE),
        ("not-a-jwt", TokenReason.MALFORMED),
        (f"{head}.{body}", TokenReason.MALFORMED),
    ]:
        with pytest.raises(InvalidToken) as caught:
            verify_token(bad, keys(issuer), rules(issuer), NOW)
        assert caught.value.reason is reason, bad


def test_alg_none_and_hmac_confusion_are_refused(issuer: TokenIssuer) -> None:
    claims = {"iss": issuer.issuer, "aud": issuer.audience, "exp": NOW + 60, "upn": "alice"}
    unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": "key-1"})
    public_pem = (
        issuer.keys["key-1"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    # The classic confusion: HS256 keyed with the issuer's public key as the secret.
    forged = _hs256(claims, public_pem, kid="key-1")
    for token in (unsigned, forged):
        with pytest.raises(TokenNotAccepted) as caught:
            verify_token(token, keys(issuer), rules(issuer), NOW)
        assert caught.value.reason is TokenReason.ALGORITHM
    # Even with HS256 in the list (settings refuse it), no JWKS key is an HMAC key.
    with pytest.raises(UnknownKey):
        verify_token(forged, keys(issuer), rules(issuer, algorithms=("HS256",)), NOW)


def _hs256(claims: dict[str, Any], secret: bytes, kid: str) -> str:
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def test_key_choice_by_kid_type_and_declared_alg(issuer: TokenIssuer) -> None:
    other = TokenIssuer(kid="key-2")
    token = other.token("alice", now=NOW)
    with pytest.raises(UnknownKey):
        verify_token(token, keys(issuer), rules(issuer), NOW)  # kid unknown
    mixed = parse_jwks(json.dumps({"keys": issuer.jwks()["keys"] + other.jwks()["keys"]}).encode())
    assert verify_token(token, mixed, rules(issuer), NOW).kid == "key-2"
    no_kid = jwt.encode(
        jwt.decode(token, options={"verify_signature": False}), other.keys["key-2"], "RS256"
    )
    assert verify_token(no_kid, keys(other), rules(other), NOW).user == "alice"
    with pytest.raises(UnknownKey):  # no kid and two candidate keys: no guessing
        verify_token(no_kid, mixed, rules(issuer), NOW)
    ec_issuer = TokenIssuer(algorithm="ES256", kid="key-1")
    with pytest.raises(UnknownKey):  # an RSA key never verifies an ES256 token
        verify_token(
            ec_issuer.token("a", now=NOW), keys(issuer), rules(issuer, algorithms=("ES256",)), NOW
        )
    pinned = issuer.jwks()
    pinned["keys"][0]["alg"] = "RS512"
    with pytest.raises(UnknownKey):  # the key is declared for another algorithm
        verify_token(
            issuer.token("a", now=NOW), parse_jwks(json.dumps(pinned).encode()), rules(issuer), NOW
        )


def test_jwks_skips_keys_that_must_never_verify(issuer: TokenIssuer) -> None:
    good = issuer.jwks()["keys"][0]
    doc = {
        "keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {**good, "kid": "enc", "use": "enc"},
            {**good, "kid": "private", "d": "AAAA"},
            {**good, "kid": "odd-alg", "alg": "HS256"},
            {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
            "not-a-key",
            good,
        ]
    }
    parsed = parse_jwks(json.dumps(doc).encode())
    assert parsed.kids == {"key-1"} and parsed.skipped == 6


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"[]",
        b'{"keys": {}}',
        b'{"keys": []}',
        b'{"keys": [{"kty": "oct", "k": "AA"}]}',
        b"\xff",
    ],
)
def test_jwks_without_a_usable_key_is_an_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        parse_jwks(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_jwks_bytes_give_keys_or_value_error(data: bytes) -> None:
    try:
        parsed = parse_jwks(data)
    except ValueError:
        return
    assert parsed.keys


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEF0123456789-_.=", max_size=300))
def test_any_token_text_is_refused_cleanly(text: str) -> None:
    issuer = TokenIssuer.__new__(TokenIssuer)  # no key generation per example
    issuer.issuer, issuer.audience, issuer.algorithm = "https://i", "a", "RS256"
    try:
        verify_token(text, _FIXED_KEYS, rules(issuer), time.time())
    except (InvalidToken, TokenNotAccepted):
        return
    raise AssertionError("a random string verified")


_FIXED_KEYS = parse_jwks(TokenIssuer().jwks_bytes())
