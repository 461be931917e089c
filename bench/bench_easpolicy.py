"""Microseconds per request-time policy check (``easpolicy.gate``), 100,000 associations.

Run: ``.venv/bin/python bench/bench_easpolicy.py``. The check every forwarded
request of a device under a gateway ActiveSync policy goes through (which
policy the device gets, is the key the one issued for its content). Cases,
against snapshots of 100,000 associations on 70,000 DeviceIds (30,000 devices
with two mailboxes), each association provisioned:

- *default policy*: one default assignment (resolution looks at the device's
  labels and the default only);
- *user policies*: a policy assigned to every user (resolution walks the
  device's mailboxes: association and user assignments);
- *two-mailbox device, user policies*: the same on a device with two mailboxes.

Baseline measured in the same run: ``evaluate`` (the access decision of a
known association, which every request makes anyway). Best of 7 repeats.
Prints a markdown table and writes ``bench/results/bench_easpolicy.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from sentry.eas.policydoc import settings_digest
from sentry.model import Association, AssociationKey, EasPolicy, PolicyAssignments, ProvisionRecord
from sentry.policy import Snapshot, evaluate
from sentry.policy.easpolicy import gate

ASSOCIATIONS = 100_000
PAIRED = 30_000
CALLS = 20_000
REPEAT = 7
RESULTS = Path(__file__).resolve().parent / "results"
POLICY = EasPolicy("strict", (("DevicePasswordEnabled", 1), ("MinDevicePasswordLength", 6)))


def keys() -> list[AssociationKey]:
    single = ASSOCIATIONS - PAIRED
    return [
        AssociationKey(f"DEV{i if i < single else i - single:06d}", f"user{i}")
        for i in range(ASSOCIATIONS)
    ]


def snapshot(rows: list[AssociationKey], assignments: PolicyAssignments) -> Snapshot:
    digest = settings_digest(POLICY.settings)
    records = [ProvisionRecord(k, POLICY.name, digest, 0.0, issued=5, backend_key=7) for k in rows]
    return Snapshot.build(
        associations=[Association(k) for k in rows],
        eas_policies=[POLICY],
        policy_assignments=assignments,
        provisioning=records,
    )


def best_us(call: Callable[[AssociationKey], object], sample: list[AssociationKey]) -> float:
    best = float("inf")
    for _ in range(REPEAT):
        started = time.perf_counter()
        for key in sample:
            call(key)
        best = min(best, time.perf_counter() - started)
    return best / len(sample) * 1e6


def main() -> None:
    rows = keys()
    default = snapshot(rows, PolicyAssignments(default="strict"))
    users = snapshot(rows, PolicyAssignments(users={k.user: "strict" for k in rows}))
    single = rows[:CALLS]
    paired = rows[-CALLS:]
    base = best_us(lambda k: evaluate(k, default, 0.0), single)
    cases = {
        "default policy": best_us(lambda k: gate(default, k, 5), single),
        "user policies": best_us(lambda k: gate(users, k, 5), single),
        "two-mailbox device, user policies": best_us(lambda k: gate(users, k, 5), paired),
    }
    print("| case | gate µs | evaluate µs (baseline) | ratio |\n| --- | --- | --- | --- |")
    for name, us in cases.items():
        print(f"| {name} | {us:.2f} | {base:.2f} | {us / base:.2f} |")
    RESULTS.mkdir(exist_ok=True)
    result = {"evaluate_us": base, "gate_us": cases}
    (RESULTS / "bench_easpolicy.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
