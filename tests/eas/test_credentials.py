"""sentry.eas.credentials: one Authorization header, read once; query User agrees."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentry.eas.credentials import (
    DuplicateAuthorization,
    MalformedAuthorization,
    Scheme,
    UserMismatch,
    basic_identity,
    check_query_user,
    principal,
    read_authorization,
)
from sentry.eas.errors import RequestError
from sentry.model import Realm, Realms

# alice's realm: the suffix example.com, NetBIOS name CORP, the realm of bare names
EXAMPLE = Realms((Realm("example.com", netbios=frozenset({"corp"})),), default="example.com")


def basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


def test_no_header_is_scheme_none() -> None:
    assert read_authorization(()).scheme is Scheme.NONE


def test_two_headers_are_refused_even_when_equal() -> None:
    value = basic("alice:pw")
    with pytest.raises(DuplicateAuthorization) as caught:
        read_authorization([value, value])
    assert caught.value.http_status == 400
    with pytest.raises(DuplicateAuthorization):
        read_authorization([basic("alice:pw"), basic("bob:pw")])


def test_basic_keeps_the_exact_header_and_drops_nothing_else() -> None:
    value = "  basic " + base64.b64encode(b"CORP\\alice:s3cret").decode() + " "
    auth = read_authorization([value])
    assert auth.scheme is Scheme.BASIC
    assert auth.header == value  # byte for byte what the backend will see
    assert auth.user == "CORP\\alice"
    assert "s3cret" not in repr(auth)
    assert basic_identity(auth).key == "corp\\alice"  # no realm: the NetBIOS domain stays
    assert basic_identity(auth, EXAMPLE).key == "alice@example.com"
    assert basic_identity(auth).source == "authorization"


@pytest.mark.parametrize(
    "value",
    [
        "Basic !!!notbase64",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b":pw-without-user").decode(),
        "Basic " + base64.b64encode(b"CORP\\:pw").decode(),
        "Basic",
        "Bearer",
        "Bearer   ",
        "Bearer a b",
        "Bearer " + "x" * (16 * 1024 + 1),
    ],
)
def test_unusable_basic_or_bearer_is_malformed(value: str) -> None:
    with pytest.raises(MalformedAuthorization):
        read_authorization([value])


def test_bearer_token_is_kept_but_never_shown() -> None:
    auth = read_authorization(["Bearer eyJ.abc.def"])
    assert (auth.scheme, auth.token) == (Scheme.BEARER, "eyJ.abc.def")
    assert "eyJ" not in repr(auth)


@pytest.mark.parametrize("value", ["NTLM TlRMTVNTUAAB", "Negotiate YII=", "Digest username=x"])
def test_other_schemes_are_reported_not_guessed(value: str) -> None:
    auth = read_authorization([value])
    assert auth.scheme is Scheme.OTHER and auth.user is None


@pytest.mark.parametrize(
    ("query_user", "credentials"),
    [
        (None, "alice"),
        ("alice", "alice"),
        ("ALICE", "alice"),
        ("CORP\\alice", "alice@example.com"),
        ("alice@example.com", "CORP\\Alice"),
    ],
)
def test_query_user_naming_the_same_principal_is_fine(
    query_user: str | None, credentials: str
) -> None:
    identity = principal(credentials, "authorization", EXAMPLE)
    assert identity is not None
    check_query_user(identity, query_user, EXAMPLE)


def test_without_a_realm_two_spellings_are_two_principals() -> None:
    identity = principal("CORP\\alice", "authorization")
    assert identity is not None
    with pytest.raises(UserMismatch):
        check_query_user(identity, "alice@example.com")


def test_a_known_name_of_the_user_agrees_through_the_resolver() -> None:
    identity = principal("jdoe", "authorization", EXAMPLE)
    assert identity is not None
    aliases = {"john.doe@example.com": "jdoe@example.com"}
    check_query_user(identity, "john.doe@example.com", EXAMPLE, lambda k: aliases.get(k, k))
    with pytest.raises(UserMismatch):
        check_query_user(identity, "john.doe@example.com", EXAMPLE)


@pytest.mark.parametrize("name", ["A\\B\\alice", "CORP\\alice@gmail.example", "x\x00y"])
def test_basic_naming_no_principal_under_the_realms_is_malformed(name: str) -> None:
    with pytest.raises(MalformedAuthorization):
        read_authorization([basic(f"{name}:pw")], EXAMPLE)


@pytest.mark.parametrize("query_user", ["shared", "bob@example.com", "CORP\\bob", "\\"])
def test_query_user_naming_another_principal_is_a_bad_request(query_user: str) -> None:
    identity = principal("alice", "authorization", EXAMPLE)
    assert identity is not None
    with pytest.raises(UserMismatch) as caught:
        check_query_user(identity, query_user, EXAMPLE)
    assert caught.value.http_status == 400
    assert "alice" not in caught.value.message  # no names echoed to the client


@given(st.lists(st.text(max_size=64), max_size=3))
def test_any_header_values_give_an_authorization_or_a_request_error(values: list[str]) -> None:
    try:
        auth = read_authorization(values)
    except RequestError:
        return
    assert len(values) <= 1
    assert auth.header == (values[0] if values else None)


def test_identities_are_remembered_per_realms_and_bounded() -> None:
    """``identity_of`` answers from memory only for the realms it was asked
    under: the same name under other realms is another principal."""
    from sentry.eas import identity as ident

    corp = Realms((Realm("corp.example", frozenset(), frozenset({"CORP"})),), "corp.example")
    bare = ident.identity_of("CORP\\JDoe", "query")
    assert bare is not None and bare.key == "corp\\jdoe"
    under_corp = ident.identity_of("CORP\\JDoe", "query", corp)
    assert under_corp is not None and under_corp.key == "jdoe@corp.example"
    assert ident.identity_of("CORP\\JDoe", "query") == bare  # not the corp answer
    authorized = ident.identity_of("CORP\\JDoe", "authorization", corp)
    assert authorized is not None and authorized.source == "authorization"
    for i in range(ident.KNOWN_IDENTITIES + 10):
        ident.identity_of(f"user{i}", "query", corp)
        assert len(ident._KNOWN) <= ident.KNOWN_IDENTITIES
