"""The pure part of the directory sync: mapping entries to users, and planning one
sync against a snapshot (conflicts decided on the result, removal actions, the
mass-removal guard, local users untouched)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from sentry.model import (
    Association,
    AssociationKey,
    Override,
    OverrideKind,
    Realm,
    Realms,
    User,
    UserSource,
)
from sentry.policy import Snapshot
from sentry.policy.changes import AppendAudit, DeleteUser, PutAssociation, PutUser
from sentry.policy.dirmap import map_entries, map_entry
from sentry.policy.dirsync import MIN_REMOVALS, RemovalLimitError, plan_sync
from sentry.settings_directory import LdapAttributeSettings

REALMS = Realms((Realm("example.com", netbios=frozenset({"example"})),), "example.com")
ATTRS = LdapAttributeSettings(custom1="extensionAttribute1")


@dataclass
class Entry:
    dn: str
    attrs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    problem: str | None = None

    def values(self, name: str | None) -> tuple[str, ...]:
        return () if name is None else self.attrs.get(name.lower(), ())


def entry(uid: str, *proxies: str, upn: str | None = None, **more: str) -> Entry:
    attrs = {"userprincipalname": (upn or f"{uid}@example.com",), "mail": (f"{uid}@example.com",)}
    attrs |= {"proxyaddresses": proxies} if proxies else {}
    attrs |= {k.lower(): (v,) for k, v in more.items()}
    return Entry(f"uid={uid},ou=people", attrs)


def ldap_user(name: str, *aliases: str, **kw: object) -> User:
    return User(
        f"{name}@example.com",
        email=f"{name}@example.com",
        source=UserSource.LDAP,
        aliases=frozenset(aliases),
        **kw,  # type: ignore[arg-type]
    )


def plan(snap: Snapshot, entries: list[Entry], **kw: object):  # type: ignore[no-untyped-def]
    args = {"removed": "mark", "max_removed_percent": 10.0, "actor": "t", "note": "n", "now": 5.0}
    return plan_sync(snap, map_entries(entries, ATTRS, REALMS), **(args | kw))  # type: ignore[arg-type]


def test_an_entry_maps_through_the_principal_rule_and_smtp_aliases_only() -> None:
    e = entry("Alice", "SMTP:Alice@Example.com", "smtp:a.smith@example.com", "X500:/o=x",
              "sip:alice@example.com", "EXAMPLE\\asmith", upn="EXAMPLE\\Alice",
              extensionAttribute1=" shared ")  # fmt: skip
    m = map_entry(e, ATTRS, REALMS)
    assert m.problem is None and m.user is not None
    assert m.principal == "alice@example.com" and m.user.custom1 == "shared"
    assert m.user.aliases == {"a.smith@example.com", "asmith@example.com"}
    assert m.user.source is UserSource.LDAP and m.user.email == "Alice@example.com"  # as given


def test_unusable_entries_say_why() -> None:
    assert map_entry(Entry("cn=x"), ATTRS, REALMS).problem == "no userPrincipalName: no principal"
    bad = map_entry(entry("x", upn="a@b@"), ATTRS, REALMS)
    assert bad.user is None and "names no principal" in (bad.problem or "")
    long = map_entry(entry("y", extensionAttribute1="x" * 2000), ATTRS, REALMS)
    assert long.principal == "y@example.com" and long.user is None
    odd = map_entry(Entry("cn=z", problem="attribute mail: not UTF-8"), ATTRS, REALMS)
    assert odd.problem == "attribute mail: not UTF-8"
    warned = map_entry(entry("w", "smtp:@@"), ATTRS, REALMS)
    assert warned.user is not None and warned.warnings


def test_added_changed_unchanged_and_one_audit_entry() -> None:
    snap = Snapshot.build(realms=REALMS, users=[ldap_user("bob"), ldap_user("carol")])
    out = plan(snap, [entry("alice"), entry("bob", extensionAttribute1="x"), entry("carol")])
    assert out.added == ("alice@example.com",) and out.changed == ("bob@example.com",)
    assert out.unchanged == 1
    audits = [c for c in out.changes if isinstance(c, AppendAudit)]
    assert len(audits) == 1 and audits[0].entry.action == "directory_sync"
    assert audits[0].entry.after["counts"]["added"] == 1


def test_local_users_are_never_touched_and_a_principal_is_taken_once() -> None:
    local = User("bob@example.com", source=UserSource.LOCAL, custom1="mine")
    snap = Snapshot.build(realms=REALMS, users=[local])
    twin = entry("alice2", upn="alice@example.com")
    out = plan(snap, [entry("alice"), twin, entry("bob")])
    assert out.added == ("alice@example.com",)
    problems = {e.dn: e.problem for e in out.errors}
    assert "local user" in problems["uid=bob,ou=people"]
    assert "already names" in problems["uid=alice2,ou=people"]
    assert not any(isinstance(c, PutUser) and c.user.principal == "bob@example.com"
                   for c in out.changes)  # fmt: skip


def test_an_alias_moves_from_one_user_to_another_in_one_sync() -> None:
    snap = Snapshot.build(realms=REALMS, users=[ldap_user("alice", "sales@example.com"),
                                                 ldap_user("bob")])  # fmt: skip
    out = plan(snap, [entry("alice"), entry("bob", "smtp:sales@example.com")])
    assert set(out.changed) == {"alice@example.com", "bob@example.com"} and not out.errors


def test_a_name_that_would_name_two_users_is_not_applied() -> None:
    local = User("sales@example.com", source=UserSource.LOCAL)
    snap = Snapshot.build(realms=REALMS, users=[local, ldap_user("alice")])
    out = plan(snap, [entry("alice", "smtp:sales@example.com"), entry("bob")])
    assert out.changed == () and out.added == ("bob@example.com",)
    (error,) = out.errors
    assert error.principal == "alice@example.com" and "sales@example.com" in error.problem


def test_a_reverted_entry_keeps_its_names_and_reverts_the_taker() -> None:
    """Bob's entry is unusable (kept at its last value, with sales@); alice's new
    value also claims sales@: not applied either, nothing names two users."""
    users = [ldap_user("alice"), ldap_user("bob", "sales@example.com")]
    snap = Snapshot.build(realms=REALMS, users=users)
    bob = entry("bob", extensionAttribute1="x" * 5000)
    out = plan(snap, [entry("alice", "smtp:sales@example.com"), bob])
    assert out.changed == () and {e.principal for e in out.errors} == {
        "alice@example.com",
        "bob@example.com",
    }
    assert out.missing == 0  # bob was seen: not removed


def _with_row(snap: Snapshot, user: str, override: Override | None = None) -> Snapshot:
    row = Association(AssociationKey("DEV1", user), first_seen=1.0, last_seen=2.0,
                      override=override, verified_at=1.0)  # fmt: skip
    snap.add_associations([row])
    return snap


@pytest.mark.parametrize("action", ["keep", "mark", "block", "delete"])
def test_removal_actions(action: str) -> None:
    snap = _with_row(Snapshot.build(realms=REALMS, users=[ldap_user("bob")]), "bob@example.com")
    out = plan(snap, [], removed=action, allow_mass_removal=True)
    kinds = {type(c) for c in out.changes}
    if action == "keep":
        assert out.removed == () and kinds == {AppendAudit}
    elif action == "delete":
        assert DeleteUser in kinds and out.removed == ("bob@example.com",)
    else:
        (put,) = [c for c in out.changes if isinstance(c, PutUser)]
        assert put.user.missing_since == 5.0
        blocked = [c for c in out.changes if isinstance(c, PutAssociation)]
        assert len(blocked) == (action == "block")
        if blocked:
            override = blocked[0].association.override
            assert override is not None and override.kind is OverrideKind.BLOCK
    assert sum(isinstance(c, AppendAudit) for c in out.changes) == 1


def test_an_administrator_s_block_is_not_lifted_when_the_user_returns() -> None:
    admin_block = Override(OverrideKind.BLOCK, "stolen phone", "admin", 1.0)
    gone = ldap_user("bob", missing_since=3.0)
    snap = _with_row(Snapshot.build(realms=REALMS, users=[gone]), "bob@example.com", admin_block)
    out = plan(snap, [entry("bob")], removed="block")
    assert out.returned == ("bob@example.com",)
    assert not any(isinstance(c, PutAssociation) for c in out.changes)


def test_a_mass_removal_is_refused() -> None:
    users = [ldap_user(f"u{i}") for i in range(40)]
    snap = Snapshot.build(realms=REALMS, users=users)
    with pytest.raises(RemovalLimitError, match="returned no entry"):
        plan(snap, [])
    keep = [entry(f"u{i}") for i in range(40 - MIN_REMOVALS)]
    assert len(plan(snap, keep).removed) == MIN_REMOVALS  # at the floor: allowed
    with pytest.raises(RemovalLimitError, match=f"remove {MIN_REMOVALS + 1} of 40"):
        plan(snap, keep[1:])
    assert plan(snap, [], removed="keep").missing == 40  # keep removes nothing
    marked = Snapshot.build(realms=REALMS, users=[replace(u, missing_since=1.0) for u in users])
    assert plan(marked, []).removed == ()  # flagged before: not removed again
