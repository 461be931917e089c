"""Issue 9 items 2, 5 and 6: one backend type per device; throwaway DeviceIds; strangers.

Users are routed: alice, bob, shared -> exchange; carol, gus -> gmail.
"""

from __future__ import annotations

import pytest

from sentry.model import AssociationKey, Preferences, Routing
from sentry.policy import ConflictError, NotFoundError, ValidationError
from sentry.testing.conversation import Conversation

BLOCKED, LIMIT = 129, 177
ROUTING = Routing(users={"carol": "gmail", "gus": "gmail"}, default="exchange")


def conversation(**kw: object) -> Conversation:
    return Conversation(routing=ROUTING, **kw)  # type: ignore[arg-type]


def managed(conv: Conversation, device: str, owner: str, *eas_ids: str) -> None:
    conv.add_user(owner)
    conv.register_device(device, owner, list(eas_ids))


# --- One type per managed device, across all its DeviceIds ---


def test_two_mail_apps_of_one_managed_device_share_one_backend_type():
    """A managed device with two EAS DeviceIds used to carry an Exchange
    mailbox on one and a Gmail-type mailbox on the other."""
    conv = conversation()
    managed(conv, "M1", "alice", "APP1", "APP2")
    conv.request("alice", "APP1").expect_forward("exchange")
    conv.request("carol", "APP2").expect_refuse(BLOCKED, reasons={"MIXED_BACKEND"})
    assert conv.snapshot.established("device:M1").backend_type == "exchange"
    assert conv.snapshot.established("eas:APP1") is None  # recorded on the device


def test_an_unregistered_device_id_is_its_own_device():
    conv = conversation()
    conv.request("alice", "APP1").expect_forward("exchange")
    conv.request("carol", "APP2").expect_forward("gmail")  # another device
    conv.request("gus", "APP1").expect_refuse(BLOCKED, reasons={"MIXED_BACKEND"})


def test_the_established_type_stays_when_the_row_that_set_it_is_removed():
    conv = conversation()
    managed(conv, "M1", "alice", "APP1", "APP2")
    conv.request("alice", "APP1").expect_forward("exchange")
    conv.request("bob", "APP2").expect_forward("exchange")
    conv.remove("alice", "APP1", note="account removed")
    conv.request("carol", "APP1").expect_refuse(BLOCKED, reasons={"MIXED_BACKEND"})
    established = conv.snapshot.established("device:M1")
    assert established.key == AssociationKey("APP1", "alice")  # who set it, for the record


def test_the_type_goes_when_the_device_has_no_association_left():
    conv = conversation()
    conv.request("alice", "APP1").expect_forward("exchange")
    conv.remove("alice", "APP1", note="phone handed over")
    assert conv.snapshot.established("eas:APP1") is None
    conv.request("carol", "APP1").expect_forward("gmail")
    assert conv.snapshot.established("eas:APP1").backend_type == "gmail"


def test_registering_a_device_folds_its_device_ids_types_oldest_first():
    conv = conversation()
    conv.request("alice", "APP1").expect_forward("exchange")
    conv.request("carol", "APP2").expect_forward("gmail")
    conv.hold("carol", "APP2")
    managed(conv, "M1", "alice", "APP1", "APP2")
    assert conv.snapshot.established("device:M1").backend_type == "exchange"
    assert conv.snapshot.established("eas:APP2") is None
    conv.request("carol", "APP2").expect_refuse(BLOCKED, reasons={"MIXED_BACKEND"})
    assert [k for k, _ in conv.revoked] == [AssociationKey("APP2", "carol")]  # held poll ended


def test_a_device_id_leaving_a_device_keeps_the_devices_type():
    conv = conversation()
    managed(conv, "M1", "alice", "APP1")
    conv.request("alice", "APP1").expect_forward("exchange")
    conv.retire_device("M1")
    assert conv.snapshot.established("device:M1") is None
    assert conv.snapshot.established("eas:APP1").backend_type == "exchange"
    conv.request("carol", "APP1").expect_refuse(BLOCKED, reasons={"MIXED_BACKEND"})


def test_the_first_accepted_row_establishes_and_ends_held_polls_of_other_types():
    conv = conversation()
    conv.request("carol", "APP1", accept=False).expect_forward("gmail")  # wrong password
    conv.hold("carol", "APP1")
    conv.request("alice", "APP1").expect_forward("exchange")  # accepted: establishes
    assert conv.snapshot.established("eas:APP1").backend_type == "exchange"
    assert [k for k, _ in conv.revoked] == [AssociationKey("APP1", "carol")]
    conv.request("carol", "APP1").expect_refuse(BLOCKED, reasons={"MIXED_BACKEND"})


# --- The administrator's reset (mandatory note, audited) ---


def test_an_admin_reset_sets_the_type_and_refuses_the_other_rows():
    conv = conversation()
    managed(conv, "M1", "alice", "APP1", "APP2")
    conv.request("alice", "APP1").expect_forward("exchange")
    conv.hold("alice", "APP1")
    conv.reset_backend_type("device:M1", "moved to Gmail", backend_type="gmail")
    assert [k for k, _ in conv.revoked] == [AssociationKey("APP1", "alice")]
    conv.request("alice", "APP1").expect_refuse(BLOCKED, reasons={"MIXED_BACKEND"})
    conv.request("carol", "APP2").expect_forward("gmail")
    entry = conv.store._audit[-1]
    assert (entry.action, entry.target, entry.note) == (
        "reset_backend_type",
        "device:M1",
        "moved to Gmail",
    )
    assert entry.before["backend_type"] == "exchange" and entry.after["backend_type"] == "gmail"


def test_a_reset_without_a_type_takes_the_oldest_verified_rows_type():
    conv = conversation()
    conv.request("alice", "APP1").expect_forward("exchange")
    conv.reset_backend_type("eas:APP1", "check", backend_type="gmail")
    conv.request("carol", "APP1").expect_forward("gmail")
    conv.reset_backend_type("eas:app1", "back to what the phone had first")
    assert conv.snapshot.established("eas:APP1").backend_type == "exchange"
    conv.request("carol", "APP1").expect_refuse(BLOCKED, reasons={"MIXED_BACKEND"})


@pytest.mark.parametrize(
    ("scope", "kind", "error"),
    [
        ("device:NOPE", None, NotFoundError),
        ("eas:NEVERSEEN", None, NotFoundError),
        ("eas:APP1", "lotus", ConflictError),  # no pool of that type (a reference: 409)
        ("eas:validate", None, ValidationError),  # shared by many phones
        ("eas:MDMAPP", None, ConflictError),  # a DeviceId of a managed device (state: 409)
        ("somewhere", None, ValidationError),
    ],
)
def test_reset_refusals(scope: str, kind: str | None, error: type[Exception]):
    conv = conversation()
    managed(conv, "M1", "alice", "MDMAPP")
    conv.request("alice", "APP1")
    conv.request("alice", "validate")
    with pytest.raises(error):
        conv.reset_backend_type(scope, "n", backend_type=kind)
    with pytest.raises(ValidationError, match="note"):
        conv.reset_backend_type("eas:APP1", " ")


# --- Throwaway DeviceIds (validate, webservice) ---


def test_throwaway_device_ids_are_blockable_and_never_limit_or_establish():
    conv = conversation(prefs=Preferences(max_devices_per_mailbox=1))
    conv.request("alice", "PHONE").expect_forward("exchange")
    conv.request("alice", "validate").expect_forward("exchange")  # not counted, not limited
    conv.request("carol", "validate").expect_forward("gmail")  # never MIXED: many phones
    conv.request("alice", "webservice").expect_forward("exchange")
    assert conv.snapshot.established("eas:VALIDATE") is None
    conv.block("alice", "validate", note="no account checks for alice")
    conv.request("alice", "validate").expect_refuse(BLOCKED, reasons={"MANUAL"})
    conv.request("carol", "validate").expect_forward("gmail")


# --- Strangers cannot lock a user out ---


def test_unverified_rows_never_count_for_the_per_mailbox_limit():
    """Wrong-password requests from anyone's DeviceIds used to fill alice's quota."""
    conv = conversation(prefs=Preferences(max_devices_per_mailbox=1))
    for i in range(3):
        conv.request("alice", f"STRANGER{i}", accept=False).expect_forward("exchange")
    conv.request("alice", "PHONE").expect_forward("exchange")  # verified: takes the slot
    conv.request("alice", "PHONE").expect_forward("exchange")
    conv.request("alice", "STRANGER0", accept=False).expect_refuse(
        LIMIT, reasons={"PER_MAILBOX_LIMIT"}
    )  # now the slot is taken: an unverified row is the excess (never reaches the backend)
    conv.request("alice", "PHONE").expect_forward("exchange")


def test_a_newly_verified_row_never_displaces_an_older_one():
    conv = conversation(prefs=Preferences(max_devices_per_mailbox=2))
    conv.request("alice", "OLD1", accept=False)
    conv.request("alice", "OLD2", accept=False)
    conv.request("alice", "PHONE").expect_forward()  # verified first
    conv.request("alice", "OLD1").expect_forward()  # verified second: the slots are full
    conv.request("alice", "OLD2").expect_refuse(LIMIT, reasons={"PER_MAILBOX_LIMIT"})
    conv.request("alice", "PHONE").expect_forward()


def test_unverified_rows_never_establish_a_type():
    conv = conversation()
    conv.request("carol", "PHONE", accept=False).expect_forward("gmail")
    assert conv.snapshot.established("eas:PHONE") is None
    conv.request("alice", "PHONE").expect_forward("exchange")
    assert conv.snapshot.established("eas:PHONE").backend_type == "exchange"


def test_unverified_rows_expire_unless_an_admin_acted_on_them():
    conv = conversation(step=10.0)
    conv.request("alice", "S1", accept=False)
    conv.request("alice", "S2", accept=False)
    conv.block("alice", "S2", note="keep an eye on it")
    conv.request("alice", "PHONE")
    conv.advance(100)
    conv.request("alice", "S3", accept=False)  # seen recently
    conv.expire(max_age=50)
    left = {r.key.device_id for r in conv.snapshot.of_user("alice")}
    assert left == {"S2", "S3", "PHONE"}
    expired = conv.store._history[AssociationKey("S1", "alice")][-1]
    assert expired.kind == "expired"
    entry = conv.store._audit[-1]
    assert (entry.actor, entry.action, entry.before["count"]) == ("system", "expire_unverified", 1)
    conv.expire(max_age=50)  # nothing more to do: no changes, no audit entry
    assert conv.store._audit[-1] is entry
