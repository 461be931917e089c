"""PostgreSQL URIs: checked without echoing them, shown without their password."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentry.dsn import dsn_has_password, dsn_problem, redact_dsn


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        (
            "postgresql://u:p%40ss@h:5/db?sslmode=require",
            "postgresql://u:***@h:5/db?sslmode=require",
        ),
        ("postgresql://u@h/db?password=x&a=b", "postgresql://u@h/db?password=***&a=b"),
        ("postgresql://h/db", "postgresql://h/db"),
        ("postgresql://u:p@[::1]:5432/db", "postgresql://u:***@[::1]:5432/db"),
        ("postgres://u:a:b@c@h/db", "postgres://u:***@h/db"),
    ],
)
def test_the_password_is_never_shown(dsn: str, shown: str) -> None:
    assert redact_dsn(dsn) == shown
    assert dsn_has_password(dsn) == ("***" in shown)


@pytest.mark.parametrize(
    ("dsn", "problem"),
    [
        ("postgresql://sentry@db/sentry", None),
        ("postgresql://@/sentry?host=/run/postgresql", None),
        ("host=db dbname=sentry", "must be a URI starting with postgresql://"),
        ("postgresql://db:99999/x", "not a valid URI (Port out of range 0-65535)"),
        ("postgresql://u:hunter2@db:x/y", "not a valid URI (see store.dsn)"),
        ("postgresql://db/x#frag", "must not have a #fragment"),
        ("postgresql://db/x?=1", "has an empty query parameter name"),
        ("postgresql://u:pw/x@db/x", "not a valid URI (see store.dsn)"),
        ("postgresql://u@h/db?password=a@b", "has an '@' after the host: percent-encode"),
    ],
)
def test_problems_are_named_without_echoing_the_uri(dsn: str, problem: str | None) -> None:
    found = dsn_problem(dsn)
    assert found == problem if problem is None or found is None else found.startswith(problem)
    assert "hunter2" not in (found or "")


_DELIMITERS = set("/?#@[]")  # must be percent-encoded in a URI's user part
passwords = st.text(min_size=1, max_size=12).filter(lambda p: not _DELIMITERS & set(p))


@given(st.text(max_size=40), passwords, passwords)
def test_what_is_shown_does_not_depend_on_the_password(rest: str, one: str, other: str) -> None:
    shown = redact_dsn(f"postgresql://u:{one}@h/{rest}")
    assert shown == redact_dsn(f"postgresql://u:{other}@h/{rest}")
    assert shown.startswith("postgresql://")
