"""Schema 1 -> 4: keys get their realm back; the next start re-keys under the realms
(the re-keying at start runs on SQLite and on PostgreSQL).

A version-1 database keyed every row by the bare account name and kept the
domain the client last sent in ``domain``. The migration writes the domain
back into the key, moves the history with it and takes the rows as verified;
``start_gateway`` then canonicalises them under the configured realms, merging
rows that become one (the most restrictive override wins) and deriving each
device's established backend type.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from sentry.app import start_gateway
from sentry.errors import StartupError
from sentry.model import AssociationKey, OverrideKind
from sentry.settings import settings_from_mapping
from sentry.store._sqlite_schema import MIGRATIONS, SCHEMA_VERSION
from sentry.store.postgres import PostgresStore
from sentry.store.sqlite import SqliteStore
from sentry.testing.conversation import Conversation

_V1_COLUMNS = (
    "device_id, user, domain, device_type, first_seen, last_seen, unlinked, override, "
    "verdict, pool, backend_type, wipe, ambiguous_policy"
)
_FORWARDED = ("forward", "exchange", "exchange", "none")
_BLOCK = json.dumps(
    {"kind": "block", "note": "lost", "actor": "admin", "at": 5.0, "account_only": False}
)


def version_1_database(path: Path) -> None:
    """A database as version 1 wrote it: three spellings of alice, one of them blocked."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at REAL)")
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("INSERT INTO schema_version VALUES (1, 0)")
    rows = [
        ("APP1", "alice", None, "iPhone", 1.0, 9.0, "device_unknown", None),
        ("APP2", "alice", "corp", "iPhone", 2.0, 8.0, "device_unknown", _BLOCK),
        ("APP2", "carol", "gmail.example", "iPhone", 3.0, 7.0, "device_unknown", None),
        ("APP3", "alice", "example.com", "iPad", 4.0, 6.0, "device_unknown", None),
    ]
    for device_id, user, domain, kind, first, last, unlinked, override in rows:
        conn.execute(
            f"INSERT INTO associations ({_V1_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,0)",
            (device_id, user, domain, kind, first, last, unlinked, override, *_FORWARDED),
        )
    conn.execute(
        "INSERT INTO history (device_id, user, at, kind, detail) VALUES "
        "('APP2', 'alice', 2.0, 'first_seen', '{}')"
    )
    conn.commit()
    conn.close()


async def test_the_migration_gives_keys_their_domain_back(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    version_1_database(path)
    store = await SqliteStore.open(path)
    try:
        snap = await store.load()
        keys = sorted(snap.keys())
        assert keys == [
            AssociationKey("APP1", "alice"),
            AssociationKey("APP2", "carol@gmail.example"),
            AssociationKey("APP2", "corp\\alice"),
            AssociationKey("APP3", "alice@example.com"),
        ]
        assert all(row.verified_at == row.first_seen for row in snap.associations())
        history = await store.history(AssociationKey("APP2", "corp\\alice"))
        assert [e.kind for e in history] == ["first_seen"]
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        versions = [v for (v,) in conn.execute("SELECT version FROM schema_version")]
        assert versions == list(range(1, SCHEMA_VERSION + 1))
        assert conn.execute("SELECT COUNT(*) FROM associations WHERE domain IS NOT NULL").fetchone()
        assert conn.execute("SELECT domain FROM associations").fetchall() == [(None,)] * 4


async def test_the_next_start_re_keys_under_the_realms_and_merges(tmp_path: Path) -> None:
    version_1_database(tmp_path / "sentry.db")
    settings = settings_from_mapping(
        {
            "gateway": {"listen": {"port": 0}, "tls": {"enabled": False}},
            "admin": {"listen": {"port": 0}, "token_file": "token"},
            "store": {"path": "sentry.db"},
            "identity": {
                "realms": [{"name": "example.com", "netbios": ["CORP"]}, {"name": "gmail.example"}],
                "default_realm": "example.com",
            },
            "pools": [
                {"name": "exchange", "type": "exchange", "servers": ["http://127.0.0.1:9"]},
                {"name": "gmail", "type": "gmail", "servers": ["http://127.0.0.1:9"]},
            ],
            "routing": {"default": "exchange", "domains": {"gmail.example": "gmail"}},
        }
    )
    with capture_logs() as logs:
        gw = await start_gateway(settings, registry=CollectorRegistry(), root=tmp_path)
    try:
        snap = gw.state.snapshot
        assert sorted(snap.keys()) == [
            AssociationKey("APP1", "alice@example.com"),
            AssociationKey("APP2", "alice@example.com"),
            AssociationKey("APP2", "carol@gmail.example"),
            AssociationKey("APP3", "alice@example.com"),
        ]
        blocked = snap.get(AssociationKey("APP2", "alice@example.com"))
        assert blocked.override is not None and blocked.override.kind is OverrideKind.BLOCK
        # the oldest verified row of APP2 (alice, on exchange) established its type
        assert snap.established("eas:APP2").backend_type == "exchange"
        carol = snap.get(AssociationKey("APP2", "carol@gmail.example"))
        assert carol.pool == "gmail" and "MIXED_BACKEND" in carol.reasons  # recorded at start
        history = await gw.store.history(AssociationKey("APP2", "alice@example.com"))
        assert [e.kind for e in history][:2] == ["first_seen", "rekeyed"]
        events = {e["event"] for e in logs}
        assert {"principals_rekeyed", "backend_types_derived"} <= events
    finally:
        await gw.stop()
    # A second start with the same realms has nothing to do.
    with capture_logs() as logs:
        gw = await start_gateway(settings, registry=CollectorRegistry(), root=tmp_path)
    await gw.stop()
    assert not {"principals_rekeyed", "backend_types_derived"} & {e["event"] for e in logs}


@pytest.fixture(params=["sqlite", "postgresql"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def stored(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest, conv: Conversation
) -> dict[str, str]:
    """The conversation's changes in a store of ``kind``; the settings' store section."""
    store: SqliteStore | PostgresStore
    if kind == "sqlite":
        store = await SqliteStore.open(tmp_path / "sentry.db")
        section: dict[str, str] = {"path": "sentry.db"}
    else:
        dsn = request.getfixturevalue("pg_dsn")
        store = await PostgresStore.open(dsn, prune=False)
        section = {"kind": "postgresql", "dsn": dsn}
    for changes in conv.log:
        await store.apply(changes)
    await store.close()
    return section


async def test_rows_that_collapse_into_one_key_merge_and_are_logged(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    """Rows made with no realm (``alice``, ``CORP\\alice``) meet when a realm joins them."""
    conv = Conversation()
    conv.request("alice", "APP1")
    conv.request("CORP\\alice", "APP1")
    conv.block("CORP\\alice", "APP1", note="lost")
    section = await stored(kind, tmp_path, request, conv)
    settings = settings_from_mapping(
        {
            "gateway": {"listen": {"port": 0}, "tls": {"enabled": False}},
            "admin": {"listen": {"port": 0}, "token_file": "token"},
            "store": section,
            "identity": {
                "realms": [{"name": "example.com", "netbios": ["CORP"]}],
                "default_realm": "example.com",
            },
            "pools": [{"name": "exchange", "type": "exchange", "servers": ["http://127.0.0.1:9"]}],
            "routing": {"default": "exchange"},
        }
    )
    with capture_logs() as logs:
        gw = await start_gateway(settings, registry=CollectorRegistry(), root=tmp_path)
    try:
        (row,) = gw.state.snapshot.associations()
        assert row.key == AssociationKey("APP1", "alice@example.com")
        assert row.override is not None and row.override.kind is OverrideKind.BLOCK
        merged = [e for e in logs if e["event"] == "associations_merged"]
        assert [e["key"] for e in merged] == [["APP1", "alice@example.com"]]
        audit, _ = await gw.store.audit()
        assert any(e.action == "rekey_association" and e.actor == "system" for e in audit)
        history = await gw.store.history(row.key)
        assert [e.kind for e in history].count("first_seen") == 2  # both histories kept
    finally:
        await gw.stop()


async def test_users_that_would_collapse_stop_the_start_with_the_key_path(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    conv = Conversation()
    conv.add_user("alice")
    conv.add_user("CORP\\alice", email="")
    section = await stored(kind, tmp_path, request, conv)
    settings = settings_from_mapping(
        {
            "gateway": {"listen": {"port": 0}, "tls": {"enabled": False}},
            "admin": {"listen": {"port": 0}, "token_file": "token"},
            "store": section,
            "identity": {
                "realms": [{"name": "example.com", "netbios": ["CORP"]}],
                "default_realm": "example.com",
            },
        }
    )
    with pytest.raises(StartupError, match=r"^identity\.realms: users .* would both be"):
        await start_gateway(settings, registry=CollectorRegistry(), root=tmp_path)
