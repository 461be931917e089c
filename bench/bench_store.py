"""Time and peak RSS to load 1,000,000 associations from SQLite.

Run: ``.venv/bin/python bench/bench_store.py``. The database is generated once
into ``bench/results/store_1m.db`` (git-ignored; delete it to regenerate):
1M associations on 700k DeviceIds for 500k mailboxes, 80% with
DeviceInformation, 1% with an admin override, plus 50k users and 50k managed
devices. Each measurement runs in a fresh subprocess, which reports its
wall time and ``VmHWM`` (peak RSS) from ``/proc/self/status``:

- *floor*: the same ``SELECT`` read with ``fetchmany`` and thrown away
  (what SQLite and the driver cost before any object is built);
- *load*: ``SqliteStore.open`` + ``load()``, i.e. the full ``Snapshot`` with
  its indexes, as the gateway does at start.

Targets: <= 10 s and <= 1 GiB. Prints a markdown table, writes
``bench/results/bench_store.json``.

``bench/bench_store.py commit`` times the other thing the store is asked to do
fast (issue #14: the bulk block's API call <= 100 ms for 1,000 rows): one
admin bulk Block of 1,000 of 2,000 settled associations, committed through
``AccessState.commit`` on a SQLite store in a temporary folder (``plan_bulk``,
the store's one transaction of 3,001 changes, the snapshot's ``absorb``), then
a bulk Reset of the same rows (not timed) so the next round blocks again.
It reports the median and best of ``COMMIT_ROUNDS`` rounds for each phase
(plan, write, absorb, total) and writes ``bench/results/bench_store_commit.json``
(``commit --rounds N``: N rounds, the table only).
Profile it with ``python -m cProfile -s tottime bench/bench_store.py commit``
(run as a script, ``bench/profile.py`` hides the standard ``profile`` module
from an import inside it).
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from sentry.model import (
    Association,
    AssociationKey,
    Device,
    DeviceInformation,
    Override,
    OverrideKind,
    Platform,
    Pool,
    Realm,
    Realms,
    Reason,
    Routing,
    UnlinkCause,
    User,
    Verdict,
)
from sentry.policy import Change, RequestFacts, Snapshot

ROWS = 1_000_000
DEVICES = 700_000
MAILBOXES = 500_000
REGISTRY = 50_000
RUNS = 3
TARGET_S, TARGET_MIB = 10.0, 1024.0
RESULTS = Path(__file__).resolve().parent / "results"
DATABASE = RESULTS / "store_1m.db"
NOW = 1_700_000_000.0

MODELS = ("iPhone15,2", "iPhone14,5", "SM-G991B", "Pixel 8", "SM-A546B", "iPad13,1")
OSES = ("iOS 17.1", "iOS 16.6", "Android 14", "Android 13", "iPadOS 17.1")
AGENTS = (
    "Apple-iPhone15C2/2104.1",
    "Android-Mail/2023.10",
    "Outlook-iOS/2.0",
    "Apple-iPad13C1/2104",
)
TYPES = ("iPhone", "Android", "iPad", "Outlook", "SAMSUNGSMG991B")
OPERATORS = ("Telekom", "Vodafone", "O2", None)


def associations(rng: random.Random) -> Iterator[Association]:
    """ROWS rows: the first DEVICES on distinct DeviceIds, the rest second mailboxes."""
    for i in range(ROWS):
        device = i if i < DEVICES else (i - DEVICES) * 2  # second mailbox on every other
        user = device % MAILBOXES if i < DEVICES else (device + MAILBOXES // 2) % MAILBOXES
        seen = NOW - rng.randint(0, 30_000_000)
        linked = device < REGISTRY and user == device % MAILBOXES
        yield Association(
            AssociationKey(f"{device:016X}", f"user{user}@corp.example"),
            device_type=rng.choice(TYPES),
            user_agent=rng.choice(AGENTS),
            protocol_version=rng.choice(("14.1", "16.1")),
            device_info=_info(rng, i) if rng.random() < 0.8 else None,
            first_seen=seen,
            last_seen=seen + rng.randint(0, 1_000_000),
            device=f"M{device}" if linked else None,
            unlinked=None if linked else UnlinkCause.DEVICE_UNKNOWN,
            override=_override(rng) if rng.random() < 0.01 else None,
            verdict=Verdict.FORWARD if rng.random() < 0.95 else Verdict.REFUSE,
            reasons=frozenset({Reason.MANUAL}) if rng.random() < 0.02 else frozenset(),
            pool="exchange",
            backend_type="exchange",
            policy_fingerprint=rng.choice(("P1", "P2", None)),
            verified_at=seen if rng.random() < 0.97 else None,
        )


def _info(rng: random.Random, i: int) -> DeviceInformation:
    return DeviceInformation(
        model=rng.choice(MODELS),
        imei=f"35{rng.randrange(10**13):013d}",
        friendly_name=f"Phone {i}",
        os=rng.choice(OSES),
        os_language="en-US",
        phone_number=f"+4917{rng.randrange(10**8):08d}",
        user_agent=rng.choice(AGENTS),
        enable_outbound_sms="0",
        mobile_operator=rng.choice(OPERATORS),
    )


def _override(rng: random.Random) -> Override:
    kind = rng.choice((OverrideKind.ALLOW, OverrideKind.BLOCK))
    return Override(kind, "ticket 4711", "admin@corp.example", NOW)


def generate(path: Path) -> None:
    """Write the benchmark database with the store's own schema and row format."""
    from sentry.store._sqlite_rows import ASSOCIATION_COLUMNS, PLACEHOLDERS, association_params
    from sentry.store._sqlite_schema import migrate
    from sentry.store.codec import dumps

    rng = random.Random(1)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    migrate(conn)
    conn.execute("BEGIN")
    insert = f"INSERT INTO associations ({ASSOCIATION_COLUMNS}) VALUES ({PLACEHOLDERS})"
    conn.executemany(insert, map(association_params, associations(rng)))
    users = (User(f"user{i}", f"user{i}@corp.example") for i in range(REGISTRY))
    conn.executemany("INSERT INTO users VALUES (?, ?)", ((u.principal, dumps(u)) for u in users))
    devices = (
        Device(f"M{i}", f"user{i}", Platform.IOS, frozenset({f"{i:016X}"})) for i in range(REGISTRY)
    )
    conn.executemany("INSERT INTO devices VALUES (?, ?)", ((d.id, dumps(d)) for d in devices))
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    tmp.rename(path)


def _peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(mode: str, path: str) -> None:
    """Run in a fresh process: measure one load, print JSON."""
    from sentry.store.sqlite import SqliteStore

    before = _peak_mib()
    start = time.perf_counter()
    if mode == "floor":
        conn = sqlite3.connect(path)
        cursor = conn.execute("SELECT * FROM associations")
        count = 0
        while rows := cursor.fetchmany(20_000):
            count += len(rows)
    else:

        async def load() -> int:
            store = await SqliteStore.open(path)
            snapshot = await store.load()
            await store.close()
            return len(snapshot)

        count = asyncio.run(load())
    seconds = time.perf_counter() - start
    print(
        json.dumps({"rows": count, "seconds": seconds, "peak_mib": _peak_mib(), "base_mib": before})
    )


def measure(mode: str) -> dict[str, float]:
    """Best time and worst peak over RUNS fresh subprocesses."""
    runs = []
    for _ in range(RUNS):
        out = subprocess.run(
            [sys.executable, __file__, "--child", mode, str(DATABASE)],
            check=True,
            capture_output=True,
            text=True,
        )
        runs.append(json.loads(out.stdout))
    assert all(r["rows"] == ROWS for r in runs)
    return {
        "seconds": min(r["seconds"] for r in runs),
        "peak_mib": max(r["peak_mib"] for r in runs),
        "base_mib": max(r["base_mib"] for r in runs),
    }


def main() -> None:
    RESULTS.mkdir(exist_ok=True)
    if not DATABASE.exists():
        start = time.perf_counter()
        generate(DATABASE)
        print(f"generated {DATABASE.name} in {time.perf_counter() - start:.0f} s")
    results = {"floor (SELECT only)": measure("floor"), "load (Snapshot)": measure("load")}
    size = DATABASE.stat().st_size / 2**20
    print(
        f"\nload {ROWS:,} associations from SQLite ({size:.0f} MiB file), "
        f"best of {RUNS} fresh processes\n"
    )
    print("| case | seconds | peak RSS MiB | of which interpreter + imports | targets |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        ok = r["seconds"] <= TARGET_S and r["peak_mib"] <= TARGET_MIB
        print(
            f"| {name} | {r['seconds']:.2f} | {r['peak_mib']:.0f} | {r['base_mib']:.0f} "
            f"| ≤ {TARGET_S:.0f} s, ≤ {TARGET_MIB:.0f} MiB {'ok' if ok else 'MISSED'} |"
        )
    doc = {
        "rows": ROWS,
        "runs": RUNS,
        "file_mib": size,
        "results": results,
        "python": sys.version.split()[0],
    }
    (RESULTS / "bench_store.json").write_text(json.dumps(doc, indent=2) + "\n")


COMMIT_ROWS, COMMIT_BLOCKED, COMMIT_ROUNDS = 2_000, 1_000, 15


def commit_snapshot() -> Snapshot:
    """COMMIT_ROWS verified associations, one per DeviceId and mailbox, each
    with its decision recorded (as the gateway holds them after a request);
    every other one is of DeviceType ``BenchBlock`` (the bulk's filter)."""
    from sentry.policy import decide
    from sentry.policy.established import missing_types
    from sentry.testing.conversation import req

    realms = Realms((Realm("corp.example"),), default="corp.example")
    rows = [
        Association(
            AssociationKey(f"DEV{i:06d}", f"user{i}@corp.example"),
            "BenchBlock" if i % 2 == 0 else "iPhone",
            "Apple-iPhone/2104",
            "16.1",
            None,
            NOW - 100,
            NOW - 100,
            verified_at=NOW - 100,
        )
        for i in range(COMMIT_ROWS)
    ]
    snap = Snapshot.build(
        users=[User(f"user{i}@corp.example", f"user{i}@corp.example") for i in range(COMMIT_ROWS)],
        pools=[Pool("exchange", "exchange")],
        routing=Routing(domains={"corp.example": "exchange"}),
        associations=rows,
        realms=realms,
    )
    snap.apply(missing_types(snap, NOW))
    for row in list(snap.associations()):
        kind, agent = row.device_type, row.user_agent
        request = req(
            row.key.user, row.key.device_id, device_type=kind, user_agent=agent, realms=realms
        )
        snap.apply(decide(request, RequestFacts(), snap, NOW).changes)
    return snap


async def commit_rounds(folder: Path, rounds: int) -> list[dict[str, float]]:
    """Each round: a timed bulk Block of COMMIT_BLOCKED rows, then a bulk Reset."""
    from prometheus_client import CollectorRegistry

    from sentry.access import AccessState
    from sentry.admin.actions import ActionOptions, plan_bulk
    from sentry.observability import Metrics
    from sentry.policy import PutAssociation
    from sentry.store.sqlite import SqliteStore

    snap = commit_snapshot()
    store = await SqliteStore.open(folder / "commit.db")
    await store.apply([PutAssociation(row) for row in snap.associations()])
    state = AccessState(store, snap, Metrics(CollectorRegistry()), clock=lambda: NOW)
    keys = sorted(r.key for r in snap.associations() if r.device_type == "BenchBlock")
    text: dict[str, object] = {"device_type": "BenchBlock"}
    results = []
    plan_s: list[float] = []

    def build(snapshot: Snapshot, now: float, action: str) -> Sequence[Change]:
        started = time.perf_counter()
        opts = ActionOptions(action, "bench", "admin@corp.example")
        changes = plan_bulk(snapshot, keys, opts, now, text).changes
        plan_s.append(time.perf_counter() - started)
        return changes

    for _ in range(rounds):
        plan_s.clear()
        started = time.perf_counter()
        done = await state.commit(lambda s, n: build(s, n, "block"))
        total = time.perf_counter() - started
        assert len(done.changes) == 3 * COMMIT_BLOCKED + 1, len(done.changes)
        results.append(
            {
                "plan": plan_s[0],
                "write": done.write_seconds,
                "absorb": done.absorb_seconds,
                "total": total,
            }
        )
        await state.commit(lambda s, n: build(s, n, "reset"))
    await store.close()
    return results


def commit_main(rounds: int = COMMIT_ROUNDS) -> None:
    import structlog  # the store's own large_commit lines would fill the table

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    with tempfile.TemporaryDirectory() as folder:
        runs = asyncio.run(commit_rounds(Path(folder), rounds))
    print(
        f"\nbulk Block of {COMMIT_BLOCKED:,} of {COMMIT_ROWS:,} associations "
        f"({3 * COMMIT_BLOCKED + 1:,} changes), SQLite, {rounds} rounds\n"
    )
    print("| phase | median ms | best ms |")
    print("| --- | ---: | ---: |")
    summary = {}
    for phase in ("plan", "write", "absorb", "total"):
        values = [r[phase] * 1e3 for r in runs]
        summary[phase] = {"median_ms": statistics.median(values), "best_ms": min(values)}
        print(f"| {phase} | {summary[phase]['median_ms']:.1f} | {summary[phase]['best_ms']:.1f} |")
    if rounds != COMMIT_ROUNDS:
        return  # a smoke run: no report
    RESULTS.mkdir(exist_ok=True)
    doc = {"rows": COMMIT_ROWS, "blocked": COMMIT_BLOCKED, "rounds": rounds}
    doc |= {"results": summary, "python": sys.version.split()[0]}
    (RESULTS / "bench_store_commit.json").write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 2 and sys.argv[1] == "commit":
        commit_main(int(sys.argv[3]) if sys.argv[2:3] == ["--rounds"] else COMMIT_ROUNDS)
    else:
        main()
