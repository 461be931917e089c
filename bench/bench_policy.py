"""Microseconds per ``decide`` with 100,000 associations in the snapshot.

Run: ``.venv/bin/python bench/bench_policy.py``. Cases, all against the same
snapshot (100k associations on 70k DeviceIds, 40k managed devices, routing by
domain, a per-mailbox limit set so that rule does real work):

- *known, no change*: a known association whose state does not move; the
  outcome is one ``Touch`` (the hot path);
- *known, 2-mailbox device*: the same on a device with two mailboxes (two
  pools of different backend types are configured, so the mixed-backend rule
  looks at the peer; with one type configured it is skipped);
- *first sight*: a DeviceId the snapshot has never seen (nothing applied, so
  every call is a first sight).

Principals are canonical under one realm (corp.example, the realm of bare
names): rows are keyed ``userN@corp.example`` and requests say ``userN`` (the
parser's work is not timed: ``req`` builds the requests beforehand), every
row is verified, and every device has its established backend type.

The floor measured in the same run is a bare dict lookup of the association
(building its key from the request), the least any decision must do. Each
figure is the best of 7 repeats over distinct requests. Target: <= 10 µs.
Prints a markdown table and writes ``bench/results/bench_policy.json``.
"""

from __future__ import annotations

import json
import platform
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from sentry.eas.request import EasRequest
from sentry.model import (
    Association,
    AssociationKey,
    Device,
    Platform,
    Pool,
    Preferences,
    Realm,
    Realms,
    Routing,
    User,
)
from sentry.policy import Outcome, RequestFacts, Snapshot, Touch, decide
from sentry.policy.established import missing_types
from sentry.testing.conversation import req

ASSOCIATIONS = 100_000
TWO_MAILBOX_DEVICES = 30_000  # so 70k DeviceIds
MANAGED = 40_000
CALLS = 20_000
REPEAT = 7
TARGET_US = 10.0
NOW = 1_700_000_000.0
RESULTS = Path(__file__).resolve().parent / "results"
REALMS = Realms((Realm("corp.example"),), default="corp.example")


def build_snapshot(rng: random.Random) -> Snapshot:
    """100k associations, 70k DeviceIds, 40k managed devices (see module doc)."""
    devices = ASSOCIATIONS - TWO_MAILBOX_DEVICES
    users = [User(f"user{i}@corp.example", f"user{i}@corp.example") for i in range(60_000)]
    managed = [
        Device(f"M{i}", f"user{i}@corp.example", Platform.IOS, frozenset({f"DEV{i:06d}"}))
        for i in range(MANAGED)
    ]
    rows = []
    for i in range(ASSOCIATIONS):
        device, user = (i, i) if i < devices else (i - devices, (i * 7) % 60_000)
        seen = NOW - rng.randint(1_000, 10_000_000)
        rows.append(
            Association(
                AssociationKey(f"DEV{device:06d}", f"user{user}@corp.example"),
                "iPhone",
                "Apple-iPhone/2104",
                "16.1",
                None,
                seen,
                seen,
                verified_at=seen,
            )
        )
    routing = Routing(domains={"corp.example": "exchange"})
    snap = Snapshot.build(
        users=users,
        devices=managed,
        pools=[Pool("exchange", "exchange"), Pool("gmail", "gmail")],
        routing=routing,
        prefs=Preferences(max_devices_per_mailbox=10),
        associations=rows,
        realms=REALMS,
    )
    snap.apply(missing_types(snap, NOW))  # every device established on its backend type
    settle(snap)
    return snap


def settle(snap: Snapshot) -> None:
    """Record each row's current decision so a repeat request changes nothing."""
    facts = RequestFacts()
    for row in list(snap.associations()):
        request = req(row.key.user, row.key.device_id, user_agent=row.user_agent, realms=REALMS)
        snap.apply(decide(request, facts, snap, NOW).changes)


def timed(fn: Callable[[EasRequest], object], requests: Sequence[EasRequest]) -> float:
    """Best-of-REPEAT µs per call of ``fn`` over ``requests``."""
    best = float("inf")
    for _ in range(REPEAT):
        start = time.perf_counter_ns()
        for request in requests:
            fn(request)
        best = min(best, (time.perf_counter_ns() - start) / len(requests) / 1000)
    return best


def requests_for(keys: Sequence[AssociationKey]) -> list[EasRequest]:
    bare = [k.user.partition("@")[0] for k in keys]  # bare names: the default realm
    return [
        req(u, k.device_id, user_agent="Apple-iPhone/2104", realms=REALMS)
        for u, k in zip(bare, keys, strict=True)
    ]


def run() -> dict[str, dict[str, float]]:
    rng = random.Random(7)
    snap = build_snapshot(rng)
    facts = RequestFacts()
    keys = sorted(snap.keys())
    single = [k for k in keys if len(snap.on_device(k.device_id)) == 1]
    double = [k for k in keys if len(snap.on_device(k.device_id)) == 2]
    fresh = [AssociationKey(f"NEW{i:06d}", f"user{i % 60_000}@corp.example") for i in range(CALLS)]
    cases = {
        "known, no change": requests_for(rng.sample(single, CALLS)),
        "known, 2-mailbox device": requests_for(rng.sample(double, CALLS)),
        "first sight": requests_for(fresh),
    }

    def floor(r: EasRequest) -> object:
        return snap.get((r.device_id, r.user.key if r.user else ""))

    def decision(r: EasRequest) -> Outcome:
        return decide(r, facts, snap, NOW + 1)

    known = cases["known, no change"][:100]
    assert all(isinstance(decision(r).changes[0], Touch) for r in known)  # the hot path
    return {
        name: {"decide_us": timed(decision, rs), "floor_us": timed(floor, rs)}
        for name, rs in cases.items()
    }


def main() -> None:
    results = run()
    print(f"decide() with {ASSOCIATIONS:,} associations, best of {REPEAT} x {CALLS:,} calls\n")
    print("| case | decide µs | floor µs (dict lookup) | ratio | target |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        ratio = r["decide_us"] / r["floor_us"]
        ok = "ok" if r["decide_us"] <= TARGET_US else "MISSED"
        print(
            f"| {name} | {r['decide_us']:.2f} | {r['floor_us']:.3f} | {ratio:.0f}x "
            f"| ≤ {TARGET_US:.0f} µs {ok} |"
        )
    RESULTS.mkdir(exist_ok=True)
    doc = {
        "associations": ASSOCIATIONS,
        "calls": CALLS,
        "repeat": REPEAT,
        "target_us": TARGET_US,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "results": results,
    }
    (RESULTS / "bench_policy.json").write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
