"""Issue 9 item 1: the mailbox identity keeps its realm; aliases; no request rewrites a route.

Scripted conversations with realms: example.com (suffix corp.example.com, NetBIOS
CORP, the realm of bare names) on Exchange, gmail.example on the gmail-type pool.
"""

from __future__ import annotations

import pytest

from sentry.model import AssociationKey, Realm, Realms, Routing
from sentry.policy import ConflictError, ValidationError
from sentry.testing.conversation import Conversation

BLOCKED = 129
REALMS = Realms(
    (
        Realm("example.com", frozenset({"corp.example.com"}), frozenset({"corp"})),
        Realm("gmail.example"),
    ),
    default="example.com",
)
ROUTING = Routing(domains={"gmail.example": "gmail"}, default="exchange")


def conversation(**kw: object) -> Conversation:
    kw.setdefault("routing", ROUTING)
    return Conversation(realms=REALMS, **kw)  # type: ignore[arg-type]


def test_every_spelling_of_one_realm_is_one_association():
    conv = conversation()
    for spelling in ("CORP\\John", "john@corp.example.com", "john", "JOHN@example.com"):
        conv.request(spelling, "DEV1").expect_forward("exchange")
    assert [r.key.user for r in conv.snapshot.on_device("DEV1")] == ["john@example.com"]


def test_another_realm_is_another_association_with_its_own_pool():
    """john@example.com and john@gmail.example were one row whose pool flipped."""
    conv = conversation()
    conv.request("john", "DEV1").expect_forward("exchange")
    conv.request("john@gmail.example", "DEV2").expect_forward("gmail")
    for _ in range(3):  # the pools never flip, whatever order the requests come in
        conv.request("john@gmail.example", "DEV2").expect_forward("gmail")
        conv.request("CORP\\john", "DEV1").expect_forward("exchange")
    assert conv.row("john", "DEV1").pool == "exchange"
    assert conv.row("john@gmail.example", "DEV2").pool == "gmail"


def test_unknown_domains_are_their_own_realm_never_merged():
    conv = conversation(routing=Routing(default="exchange"))
    conv.request("john@other.example", "DEV1").expect_forward()
    conv.request("OTHER\\john", "DEV1").expect_forward()
    conv.request("john", "DEV1").expect_forward()
    users = sorted(r.key.user for r in conv.snapshot.on_device("DEV1"))
    assert users == ["john@example.com", "john@other.example", "other\\john"]


def test_a_refused_request_never_changes_another_rows_pool_or_decision():
    """alice@gmail.example with a wrong password used to re-route alice's
    Exchange row and refuse every other mailbox of the device (MIXED_BACKEND)."""
    conv = conversation()
    conv.request("alice", "PHONE").expect_forward("exchange")
    conv.request("bob", "PHONE").expect_forward("exchange")
    before = {r.key: (r.pool, r.verdict, r.reasons) for r in conv.snapshot.on_device("PHONE")}
    conv.request("alice@gmail.example", "PHONE", accept=False).expect_refuse(
        BLOCKED, reasons={"MIXED_BACKEND"}
    )
    after = {
        r.key: (r.pool, r.verdict, r.reasons)
        for r in conv.snapshot.on_device("PHONE")
        if r.key.user != "alice@gmail.example"
    }
    assert after == before
    conv.request("alice", "PHONE").expect_forward("exchange")
    conv.request("bob", "PHONE").expect_forward("exchange")


def test_the_route_follows_the_key_not_the_spelling_of_a_request():
    conv = conversation(routing=Routing(users={"vip": "gmail"}, default="exchange"))
    conv.request("CORP\\vip", "DEV1").expect_forward(
        "gmail"
    )  # routing.users key "vip" is canonical
    conv.request("vip@corp.example.com", "DEV1").expect_forward("gmail")
    assert conv.snapshot.routing.users == {"vip@example.com": "gmail"}


def test_two_routing_keys_naming_one_principal_are_refused():
    conv = conversation()
    with pytest.raises(ValidationError, match=r"john@example\.com"):
        conv.set_routing(Routing(users={"CORP\\john": "gmail", "john": "exchange"}))


# --- Aliases: the directory's known names of a user ---


def test_an_alias_and_the_users_email_are_the_same_association():
    conv = conversation()
    conv.add_user("jdoe", email="john.doe@example.com", aliases=["CORP\\johnd"])
    for spelling in ("jdoe", "john.doe@example.com", "JOHND@corp.example.com", "CORP\\jdoe"):
        conv.request(spelling, "DEV1").expect_forward()
    assert [r.key.user for r in conv.snapshot.on_device("DEV1")] == ["jdoe@example.com"]


def test_a_block_on_one_name_is_not_bypassed_by_another():
    conv = conversation()
    conv.add_user("jdoe", email="john.doe@example.com")
    conv.request("jdoe", "DEV1").expect_forward()
    conv.block("john.doe@example.com", "DEV1", note="stolen")  # admin input resolves aliases too
    conv.request("jdoe", "DEV1").expect_refuse(BLOCKED, reasons={"MANUAL"})
    conv.request("john.doe@example.com", "DEV1").expect_refuse(BLOCKED, reasons={"MANUAL"})


def test_rows_of_a_name_that_becomes_a_users_alias_join_the_users_row():
    """Rows existed under the email before the directory knew it: they are
    merged into the user's, the most restrictive override wins, history moves."""
    conv = conversation()
    conv.add_user("jdoe", email="")
    conv.request("jdoe", "DEV1").expect_forward()
    conv.allow("jdoe", "DEV1", note="vip")
    conv.request("john.doe@example.com", "DEV1").expect_forward()
    conv.block("john.doe@example.com", "DEV1", note="lost")
    conv.request("john.doe@example.com", "DEV2").expect_forward()
    conv.add_user("jdoe", email="john.doe@example.com")  # now a known name of jdoe
    rows = {r.key: r for r in conv.snapshot.of_user("jdoe@example.com")}
    assert set(rows) == {
        AssociationKey("DEV1", "jdoe@example.com"),
        AssociationKey("DEV2", "jdoe@example.com"),
    }
    merged = rows[AssociationKey("DEV1", "jdoe@example.com")]
    assert merged.override is not None and merged.override.note == "lost"  # Block beats Allow
    assert not conv.snapshot.of_user("john.doe@example.com")
    conv.request("jdoe", "DEV1").expect_refuse(BLOCKED, reasons={"MANUAL"})
    events = conv.store._history[AssociationKey("DEV1", "jdoe@example.com")]
    kinds = [e.kind for e in events]
    assert kinds.count("first_seen") == 2 and "rekeyed" in kinds  # both histories, merged
    assert [e.at for e in events] == sorted(e.at for e in events)


def test_one_name_may_not_name_two_users():
    conv = conversation()
    conv.add_user("jdoe", email="john.doe@example.com")
    with pytest.raises(ConflictError, match="already names user"):
        conv.add_user("john", email="John.Doe@example.com")
    with pytest.raises(ConflictError, match="is another user"):
        conv.add_user("jane", aliases=["jdoe"])
    with pytest.raises(ConflictError, match="known name"):
        conv.add_user("john.doe@example.com")
    assert set(conv.snapshot.users) == {"jdoe@example.com"}
