"""The change feed: its format round-trips every change exactly (Hypothesis), and the
PostgreSQL store writes one feed row per ``apply``, in commit order, announced by NOTIFY.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentry.model import (
    AccessRule,
    AccessRules,
    Association,
    AssociationKey,
    AuditEntry,
    Device,
    DeviceInformation,
    EstablishedType,
    ExchangeSetting,
    HistoryEvent,
    Label,
    NewDeviceAccess,
    Override,
    OverrideKind,
    Platform,
    Pool,
    Preferences,
    Realm,
    Realms,
    Reason,
    RefusalStyle,
    Routing,
    RuleAction,
    RuleField,
    RuleMatch,
    UnlinkCause,
    User,
    UserSource,
    Verdict,
    Violation,
    ViolationKind,
    WipeStatus,
)
from sentry.policy import changes as ch
from sentry.store.feed import FORMAT, FeedFormatError, decode_changes, encode_changes
from sentry.store.postgres import FeedGap, PostgresStore

# --- strategies: every value a change can carry ---

text = st.text(max_size=12)
opt_text = st.none() | text
times = st.floats(allow_nan=False, width=64)
names = st.frozensets(text, max_size=3)
keys = st.builds(AssociationKey, text, text)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | times | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
json_docs = st.dictionaries(text, json_values, max_size=4)

infos = st.builds(DeviceInformation, *[opt_text] * 9)
overrides = st.builds(
    Override, st.sampled_from(OverrideKind), text, text, times, st.booleans(), st.booleans()
)
associations = st.builds(
    Association,
    key=keys,
    device_type=text,
    user_agent=opt_text,
    protocol_version=opt_text,
    device_info=st.none() | infos,
    first_seen=times,
    last_seen=times,
    device=opt_text,
    unlinked=st.none() | st.sampled_from(UnlinkCause),
    manual_link=opt_text,
    override=st.none() | overrides,
    verdict=st.sampled_from(Verdict),
    reasons=st.frozensets(st.sampled_from(Reason)),
    violations=names,
    pool=opt_text,
    backend_type=opt_text,
    wipe=st.sampled_from(WipeStatus),
    policy_fingerprint=opt_text,
    ambiguous_policy=st.booleans(),
    verified_at=st.none() | times,
    access_rule=opt_text,
)
users = st.builds(
    User,
    principal=text,
    email=st.just("") | st.emails(),
    display_name=text,
    source=st.sampled_from(UserSource),
    custom1=opt_text,
    custom2=opt_text,
    custom3=opt_text,
    custom4=opt_text,
    aliases=names,
    missing_since=st.none() | times,
)
violations = st.frozensets(st.builds(Violation, st.sampled_from(ViolationKind), text), max_size=3)
devices = st.builds(
    Device, text, text, st.sampled_from(Platform), names, st.booleans(), violations, names,
    st.booleans(),
)  # fmt: skip
pools = st.builds(Pool, text, text, st.lists(text, max_size=3).map(tuple))
routings = st.builds(
    Routing,
    st.dictionaries(text, text, max_size=3),
    st.dictionaries(text, text, max_size=3),
    opt_text,
)
counts = st.none() | st.integers(min_value=1, max_value=10**6)
prefs = st.builds(
    Preferences,
    auto_block_unregistered=st.booleans(),
    max_devices_per_mailbox=counts,
    max_mailboxes_per_device=counts,
    refusal_style=st.sampled_from(RefusalStyle),
    new_device_access_when_registry_unreachable=st.sampled_from(NewDeviceAccess),
    compliance_overrides_allow=st.booleans(),
    admin_set=names,
)
settings = st.builds(ExchangeSetting, text, text, text, text, st.integers(-(2**31), 2**31))
labels = st.builds(Label, text, names, names)
realms = st.sampled_from(
    [
        Realms(),
        Realms((Realm("corp.example", frozenset({"corp.example", "x.example"})),), None),
        Realms(
            (Realm("a.example", netbios=frozenset({"A"})), Realm("b.example")), default="b.example"
        ),
    ]
)
established = st.builds(EstablishedType, text, text, times, st.none() | keys, opt_text, text)
audit = st.builds(
    AuditEntry, times, text, text, text, text, st.none() | json_docs, st.none() | json_docs
)
events = st.builds(HistoryEvent, times, text, json_docs)
rules = st.builds(
    AccessRule, text, st.sampled_from(RuleField), st.sampled_from(RuleMatch), text,
    st.sampled_from(RuleAction), text, text, times,
)  # fmt: skip
access_rules = st.builds(AccessRules, st.lists(rules, max_size=3).map(tuple))

STRATEGIES: dict[type, st.SearchStrategy] = {
    ch.PutAssociation: st.builds(ch.PutAssociation, associations),
    ch.DeleteAssociation: st.builds(ch.DeleteAssociation, keys),
    ch.Touch: st.builds(ch.Touch, keys, times),
    ch.PutUser: st.builds(ch.PutUser, users),
    ch.DeleteUser: st.builds(ch.DeleteUser, text),
    ch.PutDevice: st.builds(ch.PutDevice, devices),
    ch.DeleteDevice: st.builds(ch.DeleteDevice, text),
    ch.PutPool: st.builds(ch.PutPool, pools),
    ch.DeletePool: st.builds(ch.DeletePool, text),
    ch.PutRouting: st.builds(ch.PutRouting, routings),
    ch.PutPreferences: st.builds(ch.PutPreferences, prefs),
    ch.PutSetting: st.builds(ch.PutSetting, settings),
    ch.DeleteSetting: st.builds(ch.DeleteSetting, text),
    ch.PutLabel: st.builds(ch.PutLabel, labels),
    ch.DeleteLabel: st.builds(ch.DeleteLabel, text),
    ch.PutRealms: st.builds(ch.PutRealms, realms),
    ch.PutAccessRules: st.builds(ch.PutAccessRules, access_rules),
    ch.PutEstablished: st.builds(ch.PutEstablished, established),
    ch.DeleteEstablished: st.builds(ch.DeleteEstablished, text),
    ch.MoveHistory: st.builds(ch.MoveHistory, keys, keys),
    ch.AppendAudit: st.builds(ch.AppendAudit, audit),
    ch.AppendHistory: st.builds(ch.AppendHistory, keys, events),
}
changes = st.one_of(*STRATEGIES.values())


def test_the_strategies_cover_every_change_type() -> None:
    assert set(STRATEGIES) == set(ch.CHANGE_TYPES)


@given(st.lists(changes, max_size=6))
def test_every_change_list_round_trips_exactly(items: list[ch.Change]) -> None:
    text = encode_changes(items)
    assert text.isascii()  # no NUL or other raw byte a text column might refuse
    assert decode_changes(text) == tuple(items)


def test_a_non_change_is_refused() -> None:
    with pytest.raises(TypeError):
        encode_changes([ch.DeleteUser("x"), "nope"])  # type: ignore[list-item]


@pytest.mark.parametrize(
    "doc",
    [
        "not json",
        json.dumps({"changes": []}),
        json.dumps({"v": FORMAT + 1, "changes": []}),
        json.dumps({"v": FORMAT, "changes": [["Teleport", 1]]}),
        json.dumps({"v": FORMAT, "changes": [["DeleteUser", 5]]}),
        json.dumps({"v": FORMAT, "changes": [["MoveHistory", ["a"]]]}),
        json.dumps({"v": FORMAT, "changes": [["PutAssociation", [1, 2]]]}),
    ],
)
def test_an_unreadable_feed_document_is_one_clear_error(doc: str) -> None:
    with pytest.raises(FeedFormatError):
        decode_changes(doc)


# --- the feed of a real PostgreSQL store ---


def _row(i: int) -> Association:
    return Association(AssociationKey(f"D{i}", f"u{i}@corp.example"), "iPhone", first_seen=1.0)


@pytest.fixture
async def pg(pg_dsn: str):  # type: ignore[no-untyped-def]
    store = await PostgresStore.open(pg_dsn, node="node-a", prune=False)
    yield store
    await store.close()


async def test_each_apply_is_one_feed_row_in_order(pg: PostgresStore, pg_dsn: str) -> None:
    assert await pg.head() == 0
    first = (ch.PutAssociation(_row(1)), ch.AppendHistory(_row(1).key, HistoryEvent(1.0, "x")))
    second = (ch.Touch(_row(1).key, 5.0),)
    s1 = await pg.apply_seq(first)
    s2 = await pg.apply_seq(second)
    assert await pg.apply_seq(()) is None  # nothing written, no row
    assert s1 is not None and s2 is not None and s1 < s2
    assert await pg.head() == s2
    entries = await pg.changes_since(0)
    assert [(e.seq, e.node, e.changes) for e in entries] == [
        (s1, "node-a", first),
        (s2, "node-a", second),
    ]
    assert [e.seq for e in await pg.changes_since(s1)] == [s2]
    assert len(await pg.changes_since(0, limit=1)) == 1
    other = await PostgresStore.open(pg_dsn, node="node-b", prune=False)
    try:
        s3 = await other.apply_seq((ch.DeleteUser("nobody"),))
        assert [(e.seq, e.node) for e in await pg.changes_since(s2)] == [(s3, "node-b")]
    finally:
        await other.close()


async def test_a_failed_apply_writes_no_feed_row(pg: PostgresStore) -> None:
    await pg.apply((ch.PutAssociation(_row(1)),))
    head = await pg.head()
    with pytest.raises(TypeError):
        await pg.apply((ch.PutUser(User("zed")), "not a change"))  # type: ignore[arg-type]
    assert await pg.head() == head
    assert (await pg.load()).users == {}


async def test_load_with_seq_is_the_feed_up_to_its_head(pg: PostgresStore) -> None:
    await pg.apply((ch.PutAssociation(_row(1)),))
    snapshot, head = await pg.load_with_seq()
    await pg.apply((ch.PutAssociation(_row(2)),))
    assert head == (await pg.changes_since(0))[0].seq
    later = await pg.changes_since(head)
    snapshot.apply(later[0].changes)
    assert snapshot == await pg.load()


async def test_concurrent_applies_commit_in_seq_order(pg: PostgresStore) -> None:
    """Many writers at once: every row is visible in seq order, none skipped."""
    seqs = await asyncio.gather(*(pg.apply_seq((ch.PutAssociation(_row(i)),)) for i in range(40)))
    rows = await pg.changes_since(0)
    assert [r.seq for r in rows] == sorted(s for s in seqs if s is not None)
    assert len(rows) == 40


async def test_pruning_keeps_recent_rows_and_says_when_rows_are_gone(pg: PostgresStore) -> None:
    s1 = await pg.apply_seq((ch.DeleteUser("a"),))
    s2 = await pg.apply_seq((ch.DeleteUser("b"),))
    assert s1 is not None and s2 is not None
    assert await pg.prune_feed(older_than=3600) == 0
    assert len(await pg.changes_since(0)) == 2
    assert await pg.prune_feed(older_than=0) == 2
    assert await pg.head() == s2  # the head survives pruning
    assert await pg.changes_since(s2) == []
    with pytest.raises(FeedGap):
        await pg.changes_since(s1)
    s3 = await pg.apply_seq((ch.DeleteUser("c"),))
    assert [e.seq for e in await pg.changes_since(s2)] == [s3]


async def test_the_listener_hears_every_commit(pg: PostgresStore, pg_dsn: str) -> None:
    async with pg.listen(keepalive=1.0) as feed:
        signals = aiter(feed)
        first = await asyncio.wait_for(anext(signals), 10)
        assert first.resumed and feed.connected  # catch up from your load's head first
        seq = await pg.apply_seq((ch.DeleteUser("a"),))
        heard = await asyncio.wait_for(anext(signals), 10)
        assert (heard.seq, heard.node, heard.resumed) == (seq, "node-a", False)
        other = await PostgresStore.open(pg_dsn, node="node-b", prune=False)
        try:
            seq2 = await other.apply_seq((ch.DeleteUser("b"),))
        finally:
            await other.close()
        heard = await asyncio.wait_for(anext(signals), 10)
        assert (heard.seq, heard.node) == (seq2, "node-b")
