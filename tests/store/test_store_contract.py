"""The contract every ``Store`` passes: one suite, parametrised over memory, SQLite and
PostgreSQL (a real server: ``sentry.testing.pgfixtures``).

The reference for every answer is computed from the change lists a scripted
conversation produced (``conv.log``), so both stores are held to the same data.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from sentry.admin.actions import ActionOptions, plan_bulk
from sentry.model import (
    AccessRule,
    AssociationKey,
    DeviceInformation,
    Platform,
    Preferences,
    Realm,
    Realms,
    Reason,
    Routing,
    RuleAction,
    RuleField,
    RuleMatch,
    User,
)
from sentry.policy import (
    AppendAudit,
    AppendHistory,
    Change,
    DeleteAssociation,
    PutAssociation,
    PutUser,
    Snapshot,
    Touch,
    add_rule,
)
from sentry.policy.audit import plain
from sentry.store import AssociationFilter, AssociationState, SchemaError, StoreError
from sentry.store._sqlite_schema import MIGRATIONS, SCHEMA_VERSION
from sentry.store.base import AuditFilter
from sentry.store.memory import MemoryStore
from sentry.store.postgres import PostgresStore
from sentry.store.sqlite import SqliteStore
from sentry.testing.conversation import Conversation

AnyStore = MemoryStore | SqliteStore | PostgresStore


@pytest.fixture(params=["memory", "sqlite", "sqlite-row-by-row", "postgresql"])
async def store(request, tmp_path, monkeypatch) -> AsyncIterator[AnyStore]:
    """``sqlite-row-by-row``: runs of rows by ``executemany``, as on SQLite before
    3.38 (``_sqlite_writes.JSON_RUNS``); ``sqlite`` writes each run at once."""
    opened: AnyStore
    if request.param == "memory":
        opened = MemoryStore()
    elif request.param.startswith("sqlite"):
        if request.param == "sqlite-row-by-row":
            from sentry.store import _sqlite_writes

            monkeypatch.setattr(_sqlite_writes, "JSON_RUNS", False)
        opened = await SqliteStore.open(tmp_path / "contract.db")
    else:
        opened = await PostgresStore.open(request.getfixturevalue("pg_dsn"))
    yield opened
    await opened.close()


REALMS = Realms((Realm("corp.example", netbios=frozenset({"corp"})),), default="corp.example")


def busy_conversation() -> Conversation:
    """A state touching every kind of value a store keeps."""
    routing = Routing(users={"gus": "gmail"}, domains={"corp.example": "exchange"})
    prefs = Preferences(auto_block_unregistered=True)
    conv = Conversation(prefs=prefs, routing=routing, realms=REALMS)
    for rule in RULES:  # device access rules: a config document, the matched rule on rows
        conv._admin("rule", lambda snap, now, r=rule: add_rule(snap, r, actor="admin", now=now))
    conv.add_user(
        "alice",
        custom1="sales",
        custom2="sales@corp.example",
        display_name="Alice",
        aliases=["a.smith@corp.example"],
    )
    conv.add_user("sales")
    conv.register_device("MDM-1", "alice", ["PHONE"], platform=Platform.ANDROID, labels=["l"])
    conv.add_setting("Shared", "$USER_CUSTOM1$", "$USER_CUSTOM2$")
    conv.add_label("l", ["Shared"], ["MDM-1"])
    info = DeviceInformation(model="SM-G991B", imei="3512", os="Android 14", mobile_operator="T")
    conv.request("alice@corp.example", "PHONE", device_type="Android", device_info=info)
    conv.request("sales@corp.example", "PHONE", device_type="Android")
    conv.request("gus@corp.example", "PHONE", device_type="Android")  # mixed backend
    conv.request("bob@corp.example", "TAB", device_type="iPad", user_agent="Apple-iPad/1")
    conv.request("eve@nowhere.example", "PC", device_type="WindowsOutlook")  # no route
    conv.allow("bob", "TAB", note="approved")
    conv.set_compliance("MDM-1", "passcode")
    conv.request("carol@corp.example", "LOST")
    conv.wipe("carol", "LOST", note="lost", account_only=True)
    conv.request("carol@corp.example", "LOST")
    conv.request("dave@corp.example", "GONE")
    conv.wipe("dave", "GONE", note="stolen")
    conv.wipe_ack("dave@corp.example", "GONE", status=1)
    conv.record_policy("alice", "PHONE", "P1")
    conv.record_policy("sales", "PHONE", "P2")
    conv.request("bob@corp.example", "TAB")  # a Touch
    conv.request("CORP\\mallory", "TAB", accept=False)  # unverified
    conv.request("bob", "validate", device_type="Android")  # a throwaway DeviceId
    conv.preapprove("frank@corp.example", "NEWPHONE", note="new starter")  # never seen
    conv.request("heidi@corp.example", "PDA1", device_type="PocketPC", version="2.5")  # quarantined
    conv.request("ivan@corp.example", "PDA2", device_type="PocketPC", version="12.1")
    conv.block("ivan", "PDA2", note="quarantine resolved: no")
    return conv


RULES = (
    AccessRule("old", RuleField.PROTOCOL_VERSION, RuleMatch.LT, "14.0", RuleAction.QUARANTINE),
    AccessRule("ipads", RuleField.USER_AGENT, RuleMatch.PREFIX, "apple-ipad", RuleAction.ALLOW),
)


async def replay(store: AnyStore, conv: Conversation) -> None:
    for changes in conv.log:
        await store.apply(changes)


async def test_load_of_an_empty_store_is_an_empty_snapshot(store):
    assert await store.load() == Snapshot()


async def test_apply_then_load_gives_the_same_snapshot(store):
    conv = busy_conversation()
    await replay(store, conv)
    loaded = await store.load()
    assert loaded == conv.snapshot
    assert loaded.pushed("MDM-1") == conv.snapshot.pushed("MDM-1")
    assert loaded.get(AssociationKey("PHONE", "alice@corp.example")).device_info.model == "SM-G991B"


async def test_a_failing_change_list_leaves_nothing_applied(store):
    conv = busy_conversation()
    await replay(store, conv)
    before = await store.load()
    audit_before = await store.audit()
    bad = (
        PutUser(User("zed")),
        Touch(AssociationKey("TAB", "bob@corp.example"), 9e9),
        "not a change",
    )
    with pytest.raises(TypeError):
        await store.apply(bad)  # type: ignore[arg-type]
    assert await store.load() == before
    assert await store.audit() == audit_before


async def test_touch_moves_last_seen_forward_only(store):
    conv = busy_conversation()
    await replay(store, conv)
    key = AssociationKey("TAB", "bob@corp.example")
    seen = (await store.get_association(key)).last_seen
    await store.apply((Touch(key, seen - 100),))
    assert (await store.get_association(key)).last_seen == seen
    await store.apply((Touch(key, seen + 5), Touch(AssociationKey("NOPE", "x"), 1.0)))
    assert (await store.get_association(key)).last_seen == seen + 5


FILTERS = [
    AssociationFilter(),
    AssociationFilter(user="alice@corp.example"),
    AssociationFilter(device_id="phone"),
    AssociationFilter(device_type="Android"),
    AssociationFilter(state=AssociationState.ALLOWED),
    AssociationFilter(state=AssociationState.BLOCKED),
    AssociationFilter(state=AssociationState.WIPE_PENDING),
    AssociationFilter(state=AssociationState.WIPED),
    AssociationFilter(state=AssociationState.QUARANTINED),
    AssociationFilter(reason=Reason.QUARANTINE),
    AssociationFilter(reason=Reason.RULE_ALLOW),
    AssociationFilter(reason=Reason.MIXED_BACKEND),
    AssociationFilter(reason=Reason.COMPLIANCE),
    AssociationFilter(reason=Reason.MANUAL),
    AssociationFilter(linked=True),
    AssociationFilter(linked=False),
    AssociationFilter(pool="exchange"),
    AssociationFilter(pool="gmail", device_id="PHONE"),
    AssociationFilter(never_seen=True),
    AssociationFilter(never_seen=False, pool="exchange"),
    AssociationFilter(violation="passcode"),
    AssociationFilter(user="nobody"),
]


@pytest.mark.parametrize("filter", FILTERS, ids=repr)
async def test_filters_match_the_reference_semantics(store, filter):
    conv = busy_conversation()
    await replay(store, conv)
    expected = sorted(
        (r for r in conv.snapshot.associations() if filter.matches(r)),
        key=lambda r: (r.key.user, r.key.device_id),
    )
    rows, total = await store.list_associations(filter, 0, 100)
    assert (rows, total) == (expected, len(expected))


async def test_filters_are_meaningful_on_the_busy_state(store):
    conv = busy_conversation()
    await replay(store, conv)
    for filter in FILTERS[1:-1]:
        assert (await store.list_associations(filter))[1] > 0, filter


async def test_a_violation_kind_is_matched_whole(store):
    await replay(store, busy_conversation())
    assert (await store.list_associations(AssociationFilter(violation="passcode")))[1] > 0
    assert (await store.list_associations(AssociationFilter(violation="pass")))[1] == 0


async def test_pagination_covers_every_row_once(store):
    conv = busy_conversation()
    await replay(store, conv)
    everything, total = await store.list_associations(None, 0, 1000)
    assert total == len(conv.snapshot) == len(everything)
    paged = []
    for offset in range(0, total, 2):
        page, page_total = await store.list_associations(None, offset, 2)
        assert page_total == total
        paged += page
    assert paged == everything
    assert await store.list_associations(None, total, 10) == ([], total)


async def test_get_association(store):
    conv = busy_conversation()
    await replay(store, conv)
    key = AssociationKey("LOST", "carol@corp.example")
    assert await store.get_association(key) == conv.snapshot.get(key)
    assert await store.get_association(AssociationKey("LOST", "nobody")) is None


async def test_history_and_audit(store):
    conv = busy_conversation()
    await replay(store, conv)
    key = AssociationKey("LOST", "carol@corp.example")
    logged = [c for changes in conv.log for c in changes]
    history = [c.event for c in logged if isinstance(c, AppendHistory) and c.key == key]
    assert [e.kind for e in history][:2] == ["first_seen", "admin"]
    assert await store.history(key) == history
    audit = [c.entry for c in logged if isinstance(c, AppendAudit)][::-1]
    assert await store.audit(0, 1000) == (audit, len(audit))
    assert await store.audit(1, 2) == (audit[1:3], len(audit))
    wipe = next(e for e in audit if e.action == "wipe" and e.note == "lost")
    assert (wipe.actor, wipe.note, wipe.after["state"]) == ("admin@test", "lost", "wipe_pending")


async def test_a_bulk_change_list_keeps_rows_history_and_audit_in_order(store):
    """One list interleaving put, history and audit over many rows (a bulk
    action), a row put twice, and an add then delete: written in runs, it gives
    the same rows, history and audit order as applying it change by change."""
    conv = busy_conversation()
    await replay(store, conv)
    keys = sorted(row.key for row in conv.snapshot.associations())
    opts = ActionOptions("block", "bulk", "admin@test")
    plan = plan_bulk(conv.snapshot.copy(), keys, opts, 2e9, {"all": True})
    assert len(plan.changed) >= 3
    first = plan.changes[0]
    assert isinstance(first, PutAssociation)
    extra = AssociationKey("EXTRA", "nobody@corp.example")
    temp = PutAssociation(replace(first.association, key=extra))
    changes = (*plan.changes, first, temp, DeleteAssociation(extra))
    await store.apply(changes)
    expected = conv.snapshot.copy()
    expected.apply(changes)
    assert await store.load() == expected
    for key in keys:
        logged = [c for batch in conv.log for c in batch] + list(changes)
        history = [c.event for c in logged if isinstance(c, AppendHistory) and c.key == key]
        assert await store.history(key) == history
    audit = [c.entry for batch in conv.log for c in batch if isinstance(c, AppendAudit)]
    audit += [c.entry for c in changes if isinstance(c, AppendAudit)]
    assert (await store.audit(0, 1000))[0] == audit[::-1]


async def test_audit_filters_match_the_reference_semantics(store):
    conv = busy_conversation()
    await replay(store, conv)
    logged = [c.entry for changes in conv.log for c in changes if isinstance(c, AppendAudit)]
    newest = logged[::-1]
    times = sorted({e.at for e in logged})
    filters = [
        AuditFilter(actor="admin@test"),
        AuditFilter(actor="nobody"),
        AuditFilter(target="lost"),  # a part of a target, any case
        AuditFilter(target="CAROL"),
        AuditFilter(since=times[len(times) // 2]),
        AuditFilter(until=times[len(times) // 2]),
        AuditFilter(actor="admin@test", target="carol", since=times[0], until=times[-1] + 1),
    ]
    narrowed = 0
    for f in filters:
        expected = [e for e in newest if f.matches(e)]
        assert await store.audit(0, 1000, f) == (expected, len(expected)), f
        assert await store.audit(1, 1, f) == (expected[1:2], len(expected)), f
        narrowed += 0 < len(expected) < len(newest)
    assert narrowed >= 4  # the filters are not trivially all or nothing on this log


async def test_a_closed_store_refuses_calls(store):
    await store.close()
    with pytest.raises(StoreError):
        await store.load()


# --- SQLite only: migrations ---


async def test_schema_version_is_recorded_and_migrations_are_idempotent(tmp_path):
    path = tmp_path / "migrate.db"
    conv = busy_conversation()
    for attempt in range(3):
        opened = await SqliteStore.open(path)
        if attempt == 0:
            await replay(opened, conv)
        assert await opened.load() == conv.snapshot
        await opened.close()
    with sqlite3.connect(path) as conn:
        versions = conn.execute("SELECT version FROM schema_version").fetchall()
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
    assert mode == "wal"


def _version_1_database(path, prefs_doc, audit_rows):  # type: ignore[no-untyped-def]
    """A database as the first release wrote it: schema 1, a preferences document
    and ``set_preferences`` audit entries (before, after) as that code wrote them."""
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at REAL)")
        for statement in MIGRATIONS[0]:
            conn.execute(statement)  # type: ignore[arg-type]
        conn.execute("INSERT INTO schema_version VALUES (1, 0)")
        conn.execute("INSERT INTO config VALUES ('preferences', ?)", (json.dumps(prefs_doc),))
        for i, (before, after) in enumerate(audit_rows):
            conn.execute(
                "INSERT INTO audit (at, actor, action, target, note, before, after) "
                "VALUES (?, 'admin', 'set_preferences', 'preferences', '', ?, ?)",
                (float(i), json.dumps(before), json.dumps(after)),
            )


async def test_migration_records_which_preferences_an_admin_set(tmp_path):
    defaults = plain(Preferences())
    file_values = {**defaults, "refusal_style": "http403"}  # stored at start from the file
    admin = {**file_values, "max_devices_per_mailbox": None}  # admin set it back to default
    first = {**file_values, "max_devices_per_mailbox": 3}
    _version_1_database(tmp_path / "old.db", admin, [(file_values, first), (first, admin)])
    store = await SqliteStore.open(tmp_path / "old.db")
    try:
        prefs = (await store.load()).prefs
    finally:
        await store.close()
    # the admin touched only max_devices_per_mailbox (to 3, then back to None): it
    # is admin-set; refusal_style came from the file and follows the file again.
    assert prefs.admin_set == {"max_devices_per_mailbox"}
    assert prefs.max_devices_per_mailbox is None and prefs.refusal_style == "http403"


async def test_migration_gives_existing_settings_priorities_in_their_old_order(tmp_path):
    _version_1_database(tmp_path / "old.db", plain(Preferences()), [])
    docs = {
        name: {"name": name, "user_name": "$USERID$", "email": "$EMAIL$", "server": "s"}
        for name in ("zulu", "Alpha", "bravo", "ünï")
    }
    with sqlite3.connect(tmp_path / "old.db") as conn:
        for name, doc in docs.items():
            conn.execute("INSERT INTO exchange_settings VALUES (?, ?)", (name, json.dumps(doc)))
    store = await SqliteStore.open(tmp_path / "old.db")
    try:
        settings = (await store.load()).settings
    finally:
        await store.close()
    ranked = sorted(settings.values(), key=lambda s: s.priority)
    assert [s.name for s in ranked] == sorted(docs)  # the order the names gave before
    assert [s.priority for s in ranked] == [1, 2, 3, 4]


async def test_migration_without_stored_preferences_changes_nothing(tmp_path):
    _version_1_database(tmp_path / "empty.db", None, [])
    with sqlite3.connect(tmp_path / "empty.db") as conn:
        conn.execute("DELETE FROM config")
    store = await SqliteStore.open(tmp_path / "empty.db")
    try:
        assert (await store.load()).prefs == Preferences()
    finally:
        await store.close()


async def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "future.db"
    await (await SqliteStore.open(path)).close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_version VALUES (99, 0)")
    with pytest.raises(SchemaError):
        await SqliteStore.open(path)


# --- The factory used by the composition root ---


async def test_open_store_builds_the_configured_kind(tmp_path):
    from sentry.settings import StoreSettings
    from sentry.store.factory import open_store

    memory = await open_store(StoreSettings(kind="memory"))
    assert isinstance(memory, MemoryStore)
    sqlite = await open_store(StoreSettings(kind="sqlite", path="var/x.db"), root=tmp_path)
    assert isinstance(sqlite, SqliteStore)
    await sqlite.close()
    assert (tmp_path / "var" / "x.db").exists()


async def test_open_store_builds_postgresql(pg_dsn: str, tmp_path) -> None:
    from sentry.settings import StoreSettings
    from sentry.store.factory import open_store

    settings = StoreSettings(kind="postgresql", dsn=pg_dsn, pool_size=2, feed_retention_seconds=60)
    opened = await open_store(settings, root=tmp_path)
    try:
        assert isinstance(opened, PostgresStore)
        assert (opened.options.pool_size, opened.options.feed_retention) == (2, 60)
    finally:
        await opened.close()


async def test_a_bulk_actions_history_and_audit_text_is_the_reference_json(tmp_path):
    """The SQLite text of a bulk action's history and audit rows is exactly
    ``json.dumps(plain(...))`` of what the changes say (compact; audit keys
    sorted), whichever encoding shortcut the store takes: rows of every kind
    of state (reasons, violations, a matched access rule, no link, a wipe)."""
    conv = busy_conversation()
    store = await SqliteStore.open(tmp_path / "s.db")
    await replay(store, conv)
    keys = sorted(row.key for row in conv.snapshot.associations())
    changes: list[Change] = []
    for action in ("block", "allow", "reset"):
        opts = ActionOptions(action, f"bulk {action}", "admin@test")
        changes += plan_bulk(conv.snapshot.copy(), keys, opts, 2e9, {"all": True}).changes
    await store.apply(changes)
    await store.close()
    db = sqlite3.connect(tmp_path / "s.db")
    history = db.execute("SELECT detail FROM history WHERE at = 2e9 ORDER BY id").fetchall()
    audit = db.execute("SELECT before, after FROM audit WHERE at = 2e9 ORDER BY id").fetchall()
    db.close()

    def text(value: object, sort: bool) -> str | None:
        return (
            None
            if value is None
            else json.dumps(plain(value), separators=(",", ":"), sort_keys=sort)
        )

    events = [c.event.detail for c in changes if isinstance(c, AppendHistory)]
    entries = [c.entry for c in changes if isinstance(c, AppendAudit)]
    assert len(events) >= 3 * 3 and len(entries) > len(events)
    assert [row[0] for row in history] == [text(d, False) for d in events]
    assert audit == [(text(e.before, True), text(e.after, True)) for e in entries]
    assert any('"reasons":["' in row[0] and '"violations":["' in row[0] for row in history)
    assert any('"rule":"' in row[0] for row in history)


async def _touch_every_row(store: AnyStore) -> None:
    """Touches for every row (and a new row with a non-ASCII mailbox), each key
    several times in shuffled order, some older than the row: each row ends at
    the largest time it was given, never moved back; a key without a row is
    ignored."""
    import random

    conv = busy_conversation()
    await replay(store, conv)
    rows = list((await store.load()).associations())
    odd = replace(rows[0], key=AssociationKey("DÉVICE😀", "jöhn\u2028@exämple.de"))
    await store.apply((PutAssociation(odd),))
    rows.append(odd)
    rng = random.Random(7)
    touches = [Touch(AssociationKey("NOPE", "nobody"), 9e9)]
    want = {}
    for row in rows:
        times = [row.last_seen - 50, row.last_seen + rng.uniform(1, 99), row.last_seen + 0.5]
        touches += [Touch(row.key, t) for t in times]
        want[row.key] = max(row.last_seen, *times)
    rng.shuffle(touches)
    await store.apply(touches)
    got = {r.key: r.last_seen for r in (await store.load()).associations()}
    assert got == want


async def test_a_run_of_touches_keeps_the_latest_time_of_each_row(store):
    await _touch_every_row(store)


@pytest.mark.parametrize("row_by_row", [False, True], ids=["sqlite", "sqlite-row-by-row"])
async def test_a_text_with_a_nul_goes_row_by_row_and_is_kept_whole(
    tmp_path, monkeypatch, row_by_row
):
    """SQLite's JSON text functions would cut a text at a NUL: such a run goes
    by ``executemany`` (a User-Agent cannot hold one, but SQLite holds what it
    is given; PostgreSQL refuses a NUL in text, so this is SQLite's alone)."""
    from sentry.store import _sqlite_writes

    monkeypatch.setattr(_sqlite_writes, "JSON_RUNS", not row_by_row)
    store = await SqliteStore.open(tmp_path / "nul.db")
    try:
        await _nul_round_trip(store)
    finally:
        await store.close()


async def _nul_round_trip(store: SqliteStore) -> None:
    conv = busy_conversation()
    await replay(store, conv)
    row = next(iter((await store.load()).associations()))
    odd = replace(row, key=AssociationKey("NULDEVICE", "nul@corp.example"), user_agent="a\x00b")
    await store.apply((PutAssociation(odd), PutAssociation(replace(odd, device_type="Ty\x00pe"))))
    got = await store.get_association(odd.key)
    assert (got.user_agent, got.device_type) == ("a\x00b", "Ty\x00pe")
