"""The one principal rule (``sentry.principals``): realms, canonical forms, one place."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import sentry
from sentry import model, principals
from sentry.eas.identity import resolve_identity
from sentry.model import NO_REALMS, Realm, Realms, canonical_principal, principal_domain

CORP = Realms(
    (
        Realm("example.com", frozenset({"corp.example.com"}), frozenset({"corp"})),
        Realm("gmail.example", frozenset(), frozenset()),
    ),
    default="example.com",
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # one realm: NetBIOS, UPN suffix, the realm's own name and a bare name
        ("CORP\\John", "john@example.com"),
        ("john@corp.example.com", "john@example.com"),
        ("JOHN@Example.COM", "john@example.com"),
        ("john", "john@example.com"),
        ("  john  ", "john@example.com"),
        ("CORP\\john@corp.example.com", "john@example.com"),  # both name one realm
        # another configured realm
        ("john@gmail.example", "john@gmail.example"),
        # unknown domains are their own realm, never merged with another
        ("john@other.example", "john@other.example"),
        ("OTHER\\john", "other\\john"),
        ("john@other", "john@other"),
        ("john@corp", "john@corp"),  # a suffix "corp" is not the NetBIOS name CORP
        ("first.last@sub@corp.example.com", "first.last@sub@example.com"),
        ("Straße@Example.com", "strasse@example.com"),
        ("john@example.com.", "john@example.com"),
        ("john@", "john@example.com"),  # an empty domain is no domain
        ("\\john", "john@example.com"),
        # names that name no principal
        ("", None),
        ("   ", None),
        ("CORP\\", None),
        ("@corp.example.com", None),
        ("CORP\\john@gmail.example", None),  # NetBIOS and suffix name two realms
        ("OTHER\\john@other.example", None),
        ("a\\b\\carl", None),
        ("x@y\\john", None),
        ("jo\x00hn", None),
        ("jo\nhn", None),
        ("j" * 321, None),
    ],
)
def test_canonical_principal_under_realms(raw, expected):
    assert canonical_principal(raw, CORP) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("john", "john"),
        ("JOHN", "john"),
        ("john@example.com", "john@example.com"),
        ("CORP\\john", "corp\\john"),
        ("john@corp", "john@corp"),
    ],
)
def test_without_realms_bare_names_stay_bare_and_domains_are_principals(raw, expected):
    assert canonical_principal(raw) == expected
    assert canonical_principal(raw, NO_REALMS) == expected


_NAMES = st.text(alphabet=st.sampled_from("aBjo\\@ .Éß_-CORPxm"), max_size=16)


@given(_NAMES, st.sampled_from([NO_REALMS, CORP]))
def test_a_canonical_principal_is_its_own_canonical_form(raw, realms):
    key = canonical_principal(raw, realms)
    if key is not None:
        assert canonical_principal(key, realms) == key
        assert key == key.casefold() and key.strip() == key


@given(_NAMES)
def test_the_request_parser_keys_users_by_the_one_rule(raw):
    identity = resolve_identity(None, raw, CORP)
    key = canonical_principal(raw, CORP)
    if key is None:
        assert identity is None
    else:
        assert identity is not None
        assert (identity.key, identity.domain) == (key, principal_domain(key))


def test_principal_domain():
    assert principal_domain("john@example.com") == "example.com"
    assert principal_domain("a@b@example.com") == "example.com"
    assert principal_domain("corp\\john") == "corp"
    assert principal_domain("john") is None


def test_domain_key_maps_suffixes_and_netbios_names_to_their_realm():
    assert CORP.domain_key("Corp.Example.com") == "example.com"
    assert CORP.domain_key("CORP") == "example.com"
    assert CORP.domain_key("example.com") == "example.com"
    assert CORP.domain_key("Other.Example") == "other.example"


def test_realms_refuse_a_name_in_two_realms_and_an_unknown_default():
    with pytest.raises(ValueError, match="belongs to realms"):
        Realms((Realm("a", frozenset({"x.example"})), Realm("b", frozenset({"X.example"}))))
    with pytest.raises(ValueError, match="NetBIOS"):
        Realms((Realm("a", netbios=frozenset({"C"})), Realm("b", netbios=frozenset({"c"}))))
    with pytest.raises(ValueError, match="default realm"):
        Realms((Realm("a"),), default="b")


def test_realms_compare_by_configuration():
    assert Realms((Realm("a"),)) == Realms((Realm("a"),))
    assert Realms((Realm("a"),)) != Realms((Realm("a"),), default="a")
    assert hash(Realms((Realm("a"),))) == hash(Realms((Realm("a"),)))


def test_there_is_one_principal_rule():
    """The model re-exports the one function, the old duplicate is gone, and no
    other module of the gateway splits names at a backslash or an ``@``
    (``sentry/testing/state.py`` is the demo *backend*'s own login rule,
    ``sentry/testing/demo_cli.py`` reads its ``name:password@domain`` option and
    ``sentry/testing/model.py`` is the model-based wire test's deliberately
    independent second statement of the rule, checked against this one)."""
    assert model.canonical_principal is principals.canonical_principal
    import sentry.eas.identity as identity

    assert not hasattr(identity, "identity_from_name")
    root = Path(sentry.__file__).parent
    testing = ("state.py", "demo_cli.py", "model.py")
    allowed = {root / "principals.py", *(root / "testing" / n for n in testing)}
    offenders = []
    for path in sorted(root.rglob("*.py")):
        if path in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if _splits_a_name(node):
                offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert not offenders, f"a second principal rule: {offenders}"


def _splits_a_name(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
        return False
    if node.func.attr not in ("rpartition", "partition", "split", "rsplit"):
        return False
    return any(isinstance(a, ast.Constant) and a.value in ("\\", "@") for a in node.args)


_CORP = Realms(
    (Realm("corp.example", frozenset({"corp.example.com"}), frozenset({"CORP"})),), "corp.example"
)


@given(st.text(max_size=40), st.sampled_from(("query", "authorization")))
def test_a_remembered_identity_is_the_rule_s_answer(raw: str, source: str) -> None:
    """Asked twice (the second answer comes from ``identity_of``'s memory), a
    name gets what the one rule says, under realms and without."""
    from sentry.eas.identity import identity_of

    for realms in (NO_REALMS, _CORP):
        first = identity_of(raw, source, realms)
        key = canonical_principal(raw, realms)
        assert identity_of(raw, source, realms) == first
        assert (first.key if first is not None else None) == key
