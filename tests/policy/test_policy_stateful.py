"""Random request/admin/registry sequences through the policy, and the transition table.

The state machine plays a gateway (``Conversation``) with users routed to an
exchange pool, a gmail pool or nowhere, whose backend accepts or refuses
(401) each forwarded request, and checks after every request that the
fail-closed rules hold, that decisions are deterministic, and that every
recorded reason is one that applies (computed here independently of
``rules.py``); and after every step that no device (managed device, or
unregistered DeviceId) has verified, allowed mailboxes of two backend types.
Every (state, action) pair of the transition table is then tried exhaustively.
"""

from __future__ import annotations

import contextlib
import itertools

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from sentry.eas.status import WipeAckStatus
from sentry.model import (
    Association,
    NewDeviceAccess,
    OverrideKind,
    Reason,
    Routing,
    Verdict,
    WipeStatus,
)
from sentry.policy import (
    TRANSITIONS,
    Action,
    AdminState,
    Forward,
    NotFoundError,
    PolicyError,
    TransitionError,
    Wipe,
    decide,
    state_of,
)
from sentry.policy.decisions import ProvisionKind, RequestFacts
from sentry.policy.rules import managed_device
from sentry.policy.snapshot import Snapshot
from sentry.testing.conversation import Conversation, req

USERS = ("ann", "bob", "cat", "dan", "eve")
ROUTES = {"ann": "exchange", "bob": "exchange", "cat": "gmail", "dan": "exchange"}  # eve: none
DEVICES = ("D1", "D2", "D3", "D4", "D5")
MANAGED = ("M1", "M2")
VIOLATIONS = ("passcode", "compromised", "os_version")

users = st.sampled_from(USERS)
devices = st.sampled_from(DEVICES)


class PolicyMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.conv = Conversation(routing=Routing(users=dict(ROUTES)))

    @initialize()
    def registry(self) -> None:
        for managed, owner, eas in (("M1", "ann", "D1"), ("M2", "bob", "D2")):
            self.conv.add_user(owner)
            self.conv.register_device(managed, owner, [eas])

    def _target(self, pick: int, user: str, device: str) -> tuple[str, str]:
        """Mostly an existing row (so actions take effect), sometimes any key."""
        keys = sorted(self.conv.snapshot.keys())
        if not keys or pick % 3 == 0:
            return user, device
        key = keys[pick % len(keys)]
        return key.user, key.device_id

    # --- Requests, with the invariants ---

    @rule(
        pick=st.integers(0, 99),
        user=users,
        device=devices,
        command=st.sampled_from(["Sync", "Ping", "Provision", "FolderSync"]),
        ack=st.sampled_from([None, 1, 2]),
        accept=st.sampled_from([True, True, False]),
    )
    def request(
        self, pick: int, user: str, device: str, command: str, ack: int | None, accept: bool
    ) -> None:
        conv = self.conv
        user, device = self._target(pick, user, device)
        request = req(user, device, command)
        provision = ProvisionKind.WIPE_ACK if ack and command == "Provision" else ProvisionKind.NONE
        status = None if ack is None else WipeAckStatus(ack)
        facts = RequestFacts(provision, status, None, conv.registry_reachable)
        before = conv.snapshot.get(conv.key(user, device))
        prior = conv.snapshot.copy()
        twin = decide(request, facts, prior.copy(), conv.now + 1)
        reply = conv.request(
            user, device, command, provision=provision, wipe_status=ack, accept=accept
        )
        assert reply.outcome == twin, "decide is not deterministic"
        self._check_fail_closed(reply.decision, reply.row, before, prior)
        if conv.registry_reachable or before is None:
            self._check_reasons(reply.decision.reasons, reply.row, before is None, facts, prior)

    def _check_fail_closed(
        self, decision: object, row: Association, before: Association | None, prior: Snapshot
    ) -> None:
        if isinstance(decision, Forward):
            assert ROUTES.get(row.key.user) is not None, "forwarded without a route"
            assert _established(row, prior) in (None, ROUTES[row.key.user]), "mixed backends"
            assert before is None or before.wipe is WipeStatus.NONE, "wipe state forwarded"
            override = None if before is None or before.override is None else before.override.kind
            assert override is not OverrideKind.BLOCK, "blocked row forwarded"
            if self.conv.snapshot.prefs.compliance_overrides_allow:
                device = managed_device(row, self.conv.snapshot)
                assert device is None or device.compliant, "non-compliant forwarded over Allow"
        if before is not None and before.wipe in (WipeStatus.PENDING, WipeStatus.FAILED):
            assert isinstance(decision, Wipe) or row.wipe is WipeStatus.WIPED

    def _check_reasons(
        self,
        reasons: frozenset[Reason],
        row: Association,
        new: bool,
        facts: RequestFacts,
        prior: Snapshot,
    ) -> None:
        snap, prefs = prior, prior.prefs
        route = ROUTES.get(row.key.user)
        device = managed_device(row, snap)
        established = _established(row, prior)
        applies = {
            Reason.WIPE: row.wipe is not WipeStatus.NONE,
            Reason.NO_BACKEND: route is None,
            Reason.MIXED_BACKEND: route is not None
            and established is not None
            and established != route,
            Reason.MANUAL: row.override is not None
            and row.override.kind in (OverrideKind.ALLOW, OverrideKind.BLOCK),
            Reason.COMPLIANCE: device is not None and not device.compliant,
            Reason.AUTO_BLOCK: prefs.auto_block_unregistered and row.device is None,
            Reason.PER_MAILBOX_LIMIT: _over(prefs.max_devices_per_mailbox, row, snap, "user"),
            Reason.PER_DEVICE_LIMIT: _over(prefs.max_mailboxes_per_device, row, snap, "device"),
            Reason.REGISTRY_UNREACHABLE: new
            and not facts.registry_reachable
            and prefs.new_device_access_when_registry_unreachable is NewDeviceAccess.BLOCK,
        }
        wrong = {r for r in reasons if not applies[r]}
        assert not wrong, f"reasons recorded that do not apply: {wrong}"

    # --- Admin actions: succeed or raise the typed error ---

    @rule(
        action=st.sampled_from(["allow", "block", "reset", "wipe", "remove"]),
        pick=st.integers(0, 99),
        user=users,
        device=devices,
    )
    def admin_action(self, action: str, pick: int, user: str, device: str) -> None:
        user, device = self._target(pick, user, device)
        with contextlib.suppress(TransitionError, NotFoundError):
            getattr(self.conv, action)(user, device, f"{action} by the machine")

    @rule(user=users, device=devices)
    def preapprove(self, user: str, device: str) -> None:
        key = self.conv.key(user, device)
        existed = self.conv.snapshot.get(key) is not None
        try:
            self.conv.preapprove(user, device)
        except TransitionError:  # the row exists, or it could never forward (no route, mixed)
            assert existed or ROUTES.get(user) is None or self._would_mix(user, device)
            return
        row = self.conv.snapshot.get(key)
        assert not existed and row is not None and row.never_seen
        assert row.override is not None and row.override.pre_approved

    def _would_mix(self, user: str, device: str) -> bool:
        """The device (managed, else the DeviceId) is established on another type."""
        fresh = Association(self.conv.key(user, device))
        established = _established(fresh, self.conv.snapshot)
        return established is not None and established != ROUTES[user]

    @rule(pick=st.integers(0, 99), user=users, device=devices, managed=st.sampled_from(MANAGED))
    def link(self, pick: int, user: str, device: str, managed: str) -> None:
        user, device = self._target(pick, user, device)
        with contextlib.suppress(PolicyError):
            self.conv.link_to(user, device, managed)

    # --- Registry, compliance, preferences ---

    @rule(managed=st.sampled_from(MANAGED), owner=users, eas=devices)
    def register(self, managed: str, owner: str, eas: str) -> None:
        self.conv.add_user(owner)
        with contextlib.suppress(PolicyError):  # the DeviceId belongs to another device
            self.conv.register_device(managed, owner, [eas])

    @rule(managed=st.sampled_from(MANAGED), violations=st.sets(st.sampled_from(VIOLATIONS)))
    def compliance(self, managed: str, violations: set[str]) -> None:
        if managed in self.conv.snapshot.devices:
            self.conv.set_compliance(managed, *violations)

    @rule(
        auto_block=st.booleans(),
        per_mailbox=st.sampled_from([None, 1, 2]),
        per_device=st.sampled_from([None, 1, 2]),
        access=st.sampled_from(list(NewDeviceAccess)),
        compliance_first=st.booleans(),
    )
    def preferences(
        self,
        auto_block: bool,
        per_mailbox: int | None,
        per_device: int | None,
        access: NewDeviceAccess,
        compliance_first: bool,
    ) -> None:
        self.conv.set_prefs(
            auto_block_unregistered=auto_block,
            max_devices_per_mailbox=per_mailbox,
            max_mailboxes_per_device=per_device,
            new_device_access_when_registry_unreachable=access,
            compliance_overrides_allow=compliance_first,
        )

    @rule(reachable=st.booleans())
    def registry_reachability(self, reachable: bool) -> None:
        self.conv.registry_reachable = reachable

    @rule(pick=st.integers(0, 99), fingerprint=st.sampled_from([None, "P1", "P2"]))
    def policy(self, pick: int, fingerprint: str | None) -> None:
        user, device = self._target(pick, "eve", "D5")
        if self.conv.snapshot.get(self.conv.key(user, device)) is not None:
            self.conv.record_policy(user, device, fingerprint)

    @rule(managed=st.sampled_from(MANAGED), device=devices, scope_kind=st.booleans())
    def reset_type(self, managed: str, device: str, scope_kind: bool) -> None:
        scope = f"device:{managed}" if scope_kind else f"eas:{device}"
        with contextlib.suppress(PolicyError):
            self.conv.reset_backend_type(scope, "reset by the machine")

    @rule(age=st.sampled_from([0.0, 5.0, 50.0]))
    def expire(self, age: float) -> None:
        self.conv.expire(age)

    @invariant()
    def memory_matches_the_store(self) -> None:
        assert self.conv.snapshot == self.conv.store.load_now()

    @invariant()
    def one_backend_type_per_device(self) -> None:
        """Every verified, allowed mailbox of a device is on the device's
        established type (so a device never mixes backend types)."""
        snap = self.conv.snapshot
        for row in snap.associations():
            if row.verdict is not Verdict.FORWARD or row.verified_at is None:
                continue
            established = _established(row, snap)
            assert established == ROUTES.get(row.key.user), f"{row.key}: {established}"


def _established(row: Association, snap: Snapshot) -> str | None:
    """The established type of the row's device: its managed device (the Link
    To target, else the DeviceId's owner device) or its DeviceId."""
    device = managed_device(row, snap)
    scope = f"device:{device.id}" if device is not None else f"eas:{row.key.device_id}"
    record = snap.established(scope)
    return None if record is None else record.backend_type


def _over(limit: int | None, row: Association, snap: Snapshot, by: str) -> bool:
    """Over the limit: counted peers (verified) ranked by verification; an
    unverified row ranks after all of them."""
    if limit is None:
        return False
    peers = snap.of_user(row.key.user) if by == "user" else snap.on_device(row.key.device_id)
    part = 0 if by == "user" else 1
    others = [p for p in peers if p.key != row.key and p.verified_at is not None]
    mine = (row.verified_at if row.verified_at is not None else float("inf"), row.key[part])
    rank = sum((p.verified_at, p.key[part]) < mine for p in others)
    return rank >= limit


TestPolicyMachine = PolicyMachine.TestCase
TestPolicyMachine.settings = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# --- The transition table, every (state, action) pair ---

ADMIN_ACTIONS = (
    Action.ALLOW,
    Action.BLOCK,
    Action.RESET,
    Action.WIPE,
    Action.REMOVE,
    Action.LINK_TO,
    Action.PREAPPROVE,
)
CLIENT_EVENTS = {Action.WIPE_ACK_OK: 1, Action.WIPE_ACK_FAILED: 2}


def _in_state(state: AdminState) -> Conversation:
    conv = Conversation()
    conv.add_user("ann")
    conv.register_device("M1", "ann", ["OTHER"])
    conv.request("ann", "D1")
    setup = {
        AdminState.ALLOWED: lambda: conv.allow("ann", "D1"),
        AdminState.BLOCKED: lambda: conv.block("ann", "D1"),
        AdminState.WIPE_PENDING: lambda: conv.wipe("ann", "D1"),
        AdminState.WIPE_FAILED: lambda: (conv.wipe("ann", "D1"), conv.wipe_ack("ann", "D1", 2)),
        AdminState.WIPED: lambda: (conv.wipe("ann", "D1"), conv.wipe_ack("ann", "D1", 1)),
        AdminState.REMOVED: lambda: conv.remove("ann", "D1"),
    }
    setup.get(state, lambda: None)()
    assert state_of(conv.snapshot.get(conv.key("ann", "D1"))) is state
    return conv


def _admin(conv: Conversation, action: Action) -> None:
    if action is Action.LINK_TO:
        conv.link_to("ann", "D1", "M1")
    else:
        getattr(conv, action.value)("ann", "D1")


@pytest.mark.parametrize(
    ("state", "action"), list(itertools.product(AdminState, ADMIN_ACTIONS)), ids=str
)
def test_every_admin_action_in_every_state_follows_the_table(state, action):
    conv = _in_state(state)
    target = TRANSITIONS[state].get(action)
    if state is AdminState.REMOVED and action is not Action.PREAPPROVE:
        with pytest.raises(NotFoundError):  # only a pre-approval creates a row
            _admin(conv, action)
    elif target is None:
        with pytest.raises(TransitionError) as caught:
            _admin(conv, action)
        assert caught.value.http_status == 409
    else:
        _admin(conv, action)
        assert state_of(conv.snapshot.get(conv.key("ann", "D1"))) is target


@pytest.mark.parametrize(
    ("state", "event"), list(itertools.product(AdminState, CLIENT_EVENTS)), ids=str
)
def test_every_wipe_acknowledgement_in_every_state_follows_the_table(state, event):
    conv = _in_state(state)
    target = TRANSITIONS[state].get(event)
    conv.wipe_ack("ann", "D1", CLIENT_EVENTS[event])
    after = state_of(conv.snapshot.get(conv.key("ann", "D1")))
    if target is not None:
        assert after is target
    elif state is AdminState.REMOVED:
        assert after is AdminState.NONE  # the acknowledgement created a fresh row
    else:
        assert after is state  # an unexpected acknowledgement changes nothing


def test_every_action_and_client_event_is_tried():
    assert set(ADMIN_ACTIONS) | set(CLIENT_EVENTS) == set(Action)


def test_the_table_lists_every_state():
    assert set(TRANSITIONS) == set(AdminState)
    assert TRANSITIONS[AdminState.WIPED] == {Action.REMOVE: AdminState.REMOVED}
