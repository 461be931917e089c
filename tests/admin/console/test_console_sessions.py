"""The session table's rules, with the clock as an argument."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sentry.admin.auth import Role
from sentry.admin.console.sessions import Sessions


def _table(limit: int = 10) -> Sessions:
    return Sessions(idle=60, lifetime=600, limit=limit)


def test_a_new_session_has_fresh_random_ids():
    table = _table()
    a = table.create(Role.ADMIN, "ada", "g1", now=0)
    b = table.create(Role.ADMIN, "ada", "g1", now=0)
    assert a.id != b.id and a.csrf != b.csrf and a.id != a.csrf
    assert len(a.id) >= 43 and len(a.csrf) >= 43  # 256 bits, URL-safe base64


def test_idle_expiry_and_use_extends_it():
    table = _table()
    s = table.create(Role.ADMIN, "ada", "g1", now=0)
    assert table.get(s.id, "g1", now=59) is s
    assert table.get(s.id, "g1", now=118) is s
    assert table.get(s.id, "g1", now=178) is None
    assert len(table) == 0


def test_lifetime_ends_a_session_however_used():
    table = _table()
    s = table.create(Role.ADMIN, "ada", "g1", now=0)
    for t in range(0, 600, 30):
        assert table.get(s.id, "g1", now=t) is s
    assert table.get(s.id, "g1", now=600) is None


def test_a_rotated_token_ends_the_session():
    table = _table()
    s = table.create(Role.READ_ONLY, "rita", "g1", now=0)
    assert table.get(s.id, "g2", now=1) is None
    assert table.get(s.id, "g1", now=2) is None  # ended, not just hidden


def test_unknown_and_empty_ids():
    table = _table()
    assert table.get(None, "g", now=0) is None
    assert table.get("", "g", now=0) is None
    assert table.get("nope", "g", now=0) is None
    assert table.end("nope") is False


def test_the_table_is_bounded_least_recently_used_first():
    table = _table(limit=3)
    first = table.create(Role.ADMIN, "a", "g", now=0)
    second = table.create(Role.ADMIN, "b", "g", now=1)
    third = table.create(Role.ADMIN, "c", "g", now=2)
    table.get(first.id, "g", now=3)  # used: second is now the least recently used
    table.create(Role.ADMIN, "d", "g", now=4)
    assert len(table) == 3
    assert table.peek(second.id) is None
    assert table.peek(first.id) is first and table.peek(third.id) is third


def test_csrf_check():
    s = _table().create(Role.ADMIN, "a", "g", now=0)
    assert s.csrf_ok(s.csrf)
    assert not s.csrf_ok(None) and not s.csrf_ok("") and not s.csrf_ok(s.csrf + "x")
    assert not s.csrf_ok(s.id)


def test_flashes_are_shown_once_and_bounded():
    s = _table().create(Role.ADMIN, "a", "g", now=0)
    for i in range(8):
        s.flash("ok", f"m{i}")
    assert [t for _, t in s.take_flashes()] == ["m3", "m4", "m5", "m6", "m7"]
    assert s.take_flashes() == []


@given(st.lists(st.tuples(st.integers(0, 3), st.floats(0, 100)), max_size=40))
def test_no_session_outlives_its_rules(steps):
    table = Sessions(idle=10, lifetime=50, limit=3)
    now, made = 0.0, []
    for kind, dt in steps:
        now += dt
        if kind == 0 or not made:
            made.append(table.create(Role.ADMIN, "a", "g", now=now))
        else:
            s = made[kind % len(made)]
            got = table.get(s.id, "g", now=now)
            if got is not None:
                assert now - s.created < 50
        assert len(table) <= 3
