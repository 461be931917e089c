"""Schema 4 -> 5: free-text violations become the compliance vocabulary.

A device's violations were strings; after the migration each is a kind with a
detail (known spellings mapped, the text kept when it said more; anything
else ``other`` with the text), and an association's recorded violations are
the kinds. A database at version 4 is made by applying migrations 1-4 and
writing rows as version 4 wrote them.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from sentry.model import AssociationKey, Violation, ViolationKind
from sentry.store._sqlite_schema import MIGRATIONS, SCHEMA_VERSION
from sentry.store.sqlite import SqliteStore

_COLUMNS = (
    "device_id, user, device_type, first_seen, last_seen, unlinked, verdict, reasons, "
    "violations, wipe, ambiguous_policy, device"
)


def version_4_database(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at REAL)")
    for version, steps in enumerate(MIGRATIONS[:4], start=1):
        for step in steps:
            step(conn) if callable(step) else conn.execute(step)
        conn.execute("INSERT INTO schema_version VALUES (?, 0)", (version,))
    devices = {
        "ph1": ["jailbroken", "passcode", "Facebook installed"],
        "ph2": [],
    }
    for name, violations in devices.items():
        doc = {
            "id": name, "owner": "alice@example.com", "platform": "ios", "eas_ids": [],
            "compliant": not violations, "violations": violations, "labels": [],
            "retired": False,
        }  # fmt: skip
        conn.execute("INSERT INTO devices VALUES (?, ?)", (name, json.dumps(doc)))
    rows = [
        ("D1", '["Facebook installed","jailbroken","passcode"]'),
        ("D2", '["passcode"]'),
        ("D3", None),
    ]
    for device_id, violations in rows:
        conn.execute(
            f"INSERT INTO associations ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (device_id, "alice@example.com", "iPhone", 1.0, 2.0, None, "refuse",
             '["COMPLIANCE"]', violations, "none", 0, "ph1"),
        )  # fmt: skip
    conn.commit()
    conn.close()


async def test_free_text_violations_become_the_vocabulary(tmp_path: Path) -> None:
    path = tmp_path / "v4.db"
    version_4_database(path)
    store = await SqliteStore.open(path)
    try:
        snap = await store.load()
        assert snap.devices["ph1"].violations == {
            Violation(ViolationKind.COMPROMISED, "jailbroken"),
            Violation(ViolationKind.PASSCODE),
            Violation(ViolationKind.OTHER, "Facebook installed"),
        }
        assert snap.devices["ph2"].violations == frozenset()
        row = snap.get(AssociationKey("D1", "alice@example.com"))
        assert row is not None and row.violations == {"compromised", "other", "passcode"}
        assert snap.get(AssociationKey("D2", "alice@example.com")).violations == {"passcode"}
        assert snap.get(AssociationKey("D3", "alice@example.com")).violations == frozenset()
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        versions = [v for (v,) in conn.execute("SELECT version FROM schema_version")]
        assert versions == list(range(1, SCHEMA_VERSION + 1))
        (doc,) = conn.execute("SELECT data FROM devices WHERE name = 'ph1'").fetchone()
        assert json.loads(doc)["violations"] == [
            {"kind": "compromised", "detail": "jailbroken"},
            {"kind": "other", "detail": "Facebook installed"},
            {"kind": "passcode", "detail": ""},
        ]
