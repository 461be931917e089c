"""Which ActiveSync policy a device gets (sentry.policy.easpolicy): one per
device, association > user > label > default, ties by name; and the
request-time gate."""

from __future__ import annotations

from sentry.eas.policydoc import settings_digest
from sentry.eas.status import CommonStatus
from sentry.model import (
    Association,
    AssociationKey,
    Device,
    EasPolicy,
    Label,
    PolicyAssignments,
    ProvisionRecord,
)
from sentry.policy import Snapshot, remove
from sentry.policy.changes import DeleteProvision
from sentry.policy.easpolicy import Pass, ProvisionRequired, device_policy, gate

A, B, C = (EasPolicy(n, (("MinDevicePasswordLength", i),)) for i, n in enumerate("abc", 4))
PHONE = Device("phone", "alice", eas_ids=frozenset({"ID1", "ID2"}), labels=frozenset({"sales"}))


def snap(assignments: PolicyAssignments, *rows: AssociationKey, **kw: object) -> Snapshot:
    return Snapshot.build(
        devices=[PHONE],
        labels=[Label("sales"), Label("vip", devices=frozenset({"phone"}))],
        associations=[Association(k) for k in rows],
        eas_policies=[A, B, C],
        policy_assignments=assignments,
        **kw,  # type: ignore[arg-type]
    )


def source(s: Snapshot, key: AssociationKey) -> tuple[str, str] | None:
    found = device_policy(s, key)
    return None if found is None else (found.policy.name, found.source)


def test_no_assignment_is_the_backends_policy() -> None:
    assert source(snap(PolicyAssignments()), AssociationKey("X", "bob")) is None


def test_most_specific_assignment_on_any_mailbox_wins_for_the_whole_device() -> None:
    alice, shared = AssociationKey("ID1", "alice"), AssociationKey("ID2", "shared")
    s = snap(
        PolicyAssignments(default="c", users={"shared": "b"}, labels={"sales": "a"}), alice, shared
    )
    # shared's user assignment beats the label and the default, on both DeviceIds of the phone
    assert source(s, alice) == ("b", "user:shared")
    assert source(s, shared) == ("b", "user:shared")
    s = snap(
        PolicyAssignments(associations={"ID1/alice": "c"}, users={"shared": "b"}), alice, shared
    )
    assert source(s, shared) == ("c", "association:ID1/alice")


def test_labels_then_default_ties_by_name() -> None:
    s = snap(PolicyAssignments(default="a", labels={"sales": "c", "vip": "b"}))
    assert source(s, AssociationKey("ID1", "alice")) == ("b", "label:vip")
    assert source(s, AssociationKey("OTHER", "bob")) == ("a", "default")


def test_gate() -> None:
    key = AssociationKey("ID1", "alice")
    record = ProvisionRecord(key, "a", settings_digest(A.settings), 0.0, issued=11, backend_key=99)
    s = snap(PolicyAssignments(default="a"), key, provisioning=[record])
    assert gate(s, key, 11) == Pass(True, 99)
    assert gate(s, key, None) == ProvisionRequired(CommonStatus.DeviceNotProvisioned)
    assert gate(s, key, 12) == ProvisionRequired(CommonStatus.InvalidPolicyKey)
    reverted = snap(PolicyAssignments(), key, provisioning=[record])
    assert gate(reverted, key, 11) == ProvisionRequired(CommonStatus.InvalidPolicyKey)
    assert gate(reverted, key, 99) == Pass()  # the backend's own key goes through unchanged
    changed = snap(PolicyAssignments(default="b"), key, provisioning=[record])
    assert gate(changed, key, 11) == ProvisionRequired(CommonStatus.InvalidPolicyKey)


def test_remove_takes_the_issued_keys_with_the_row() -> None:
    key = AssociationKey("ID1", "alice")
    record = ProvisionRecord(key, "a", settings_digest(A.settings), 0.0, issued=11)
    s = snap(PolicyAssignments(default="a"), key, provisioning=[record])
    changes = remove(s, key, note="lost", actor="t", now=1.0)
    assert DeleteProvision(key) in changes
    s.apply(changes)
    assert key not in s.provisioning
    assert gate(s, key, 11) == ProvisionRequired(CommonStatus.InvalidPolicyKey)  # a fresh start
