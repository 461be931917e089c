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
  every call is a first sight);
- *known, 50 access rules*: *known, no change* again after 50 device access
  rules (none matching these devices, so every rule is looked at once per
  distinct device facts; the snapshot's memo answers the rest).

Then the admin side of the rules: adding a quarantine rule that matches one
row in ten (the rows with protocol version 12.1), timed as the shell does it:
``affected_keys`` (which rows' first matching rule changes), then ``refresh``
(their new decisions), next to the floor of one pass over every row.

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
    AccessRule,
    AccessRules,
    Association,
    AssociationKey,
    Device,
    Platform,
    Pool,
    Preferences,
    Realm,
    Realms,
    Routing,
    RuleAction,
    RuleField,
    RuleMatch,
    User,
)
from sentry.policy import (
    Outcome,
    PutAccessRules,
    RequestFacts,
    Snapshot,
    Touch,
    affected_keys,
    decide,
    refresh,
)
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
                "12.1" if i % 10 == 0 else "16.1",
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
        request = req(
            row.key.user,
            row.key.device_id,
            user_agent=row.user_agent,
            version=row.protocol_version,
            realms=REALMS,
        )
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


def requests_for(snap: Snapshot, keys: Sequence[AssociationKey]) -> list[EasRequest]:
    bare = [k.user.partition("@")[0] for k in keys]  # bare names: the default realm
    versions = [(r.protocol_version if (r := snap.get(k)) else None) or "16.1" for k in keys]
    return [
        req(u, k.device_id, user_agent="Apple-iPhone/2104", version=v, realms=REALMS)
        for u, k, v in zip(bare, keys, versions, strict=True)
    ]


def other_rules(count: int) -> AccessRules:
    """``count`` rules, none matching the benchmark's devices."""
    fields = [RuleField.DEVICE_TYPE, RuleField.MODEL, RuleField.OS, RuleField.USER_AGENT]
    rules = [
        AccessRule(f"r{i}", fields[i % 4], RuleMatch.GLOB, f"*Other{i}*", RuleAction.BLOCK)
        for i in range(count - 1)
    ]
    rules.append(AccessRule("v", RuleField.PROTOCOL_VERSION, RuleMatch.LT, "2.0", RuleAction.BLOCK))
    return AccessRules(tuple(rules))


def rule_change(snap: Snapshot) -> dict[str, float]:
    """ms to plan and record a quarantine rule matching 1 row in 10."""
    old = AccessRule("old", RuleField.PROTOCOL_VERSION, RuleMatch.LT, "14.0", RuleAction.QUARANTINE)
    change = PutAccessRules(AccessRules((*snap.access_rules.rules, old)))
    start = time.perf_counter_ns()
    keys = affected_keys([change], snap)
    planned = time.perf_counter_ns()
    snap.apply([change])
    moved = refresh(keys, snap, NOW + 2)
    done = time.perf_counter_ns()
    floor_start = time.perf_counter_ns()
    sum(1 for row in snap.associations() if row.protocol_version == "12.1")
    floor = time.perf_counter_ns() - floor_start
    return {
        "rows_changed": float(len(keys)),
        "changes": float(len(moved)),
        "plan_ms": (planned - start) / 1e6,
        "refresh_ms": (done - planned) / 1e6,
        "floor_ms": floor / 1e6,
    }


def run() -> dict[str, dict[str, float]]:
    rng = random.Random(7)
    snap = build_snapshot(rng)
    facts = RequestFacts()
    keys = sorted(snap.keys())
    single = [k for k in keys if len(snap.on_device(k.device_id)) == 1]
    double = [k for k in keys if len(snap.on_device(k.device_id)) == 2]
    fresh = [AssociationKey(f"NEW{i:06d}", f"user{i % 60_000}@corp.example") for i in range(CALLS)]
    cases = {
        "known, no change": requests_for(snap, rng.sample(single, CALLS)),
        "known, 2-mailbox device": requests_for(snap, rng.sample(double, CALLS)),
        "first sight": requests_for(snap, fresh),
    }

    def floor(r: EasRequest) -> object:
        return snap.get((r.device_id, r.user.key if r.user else ""))

    def decision(r: EasRequest) -> Outcome:
        return decide(r, facts, snap, NOW + 1)

    known = cases["known, no change"][:100]
    assert all(isinstance(decision(r).changes[0], Touch) for r in known)  # the hot path
    out = {
        name: {"decide_us": timed(decision, rs), "floor_us": timed(floor, rs)}
        for name, rs in cases.items()
    }
    snap.apply([PutAccessRules(other_rules(50))])
    assert all(isinstance(decision(r).changes[0], Touch) for r in known)  # still the hot path
    ruled = cases["known, no change"]
    out["known, 50 access rules"] = {
        "decide_us": timed(decision, ruled),
        "floor_us": timed(floor, ruled),
    }
    out["add a rule (100k rows)"] = rule_change(snap)
    return out


def main() -> None:
    results = run()
    print(f"decide() with {ASSOCIATIONS:,} associations, best of {REPEAT} x {CALLS:,} calls\n")
    change = results.pop("add a rule (100k rows)")
    print("| case | decide µs | floor µs (dict lookup) | ratio | target |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        ratio = r["decide_us"] / r["floor_us"]
        ok = "ok" if r["decide_us"] <= TARGET_US else "MISSED"
        print(
            f"| {name} | {r['decide_us']:.2f} | {r['floor_us']:.3f} | {ratio:.0f}x "
            f"| ≤ {TARGET_US:.0f} µs {ok} |"
        )
    print(
        f"\nadding a quarantine rule matching {change['rows_changed']:,.0f} of "
        f"{ASSOCIATIONS:,} rows: plan {change['plan_ms']:.0f} ms + record "
        f"{change['refresh_ms']:.0f} ms (floor, one pass over the rows: "
        f"{change['floor_ms']:.0f} ms; ratio "
        f"{(change['plan_ms'] + change['refresh_ms']) / change['floor_ms']:.0f}x)"
    )
    results["add a rule (100k rows)"] = change
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
