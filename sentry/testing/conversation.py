"""Scripted conversations: policy tests that read like a transcript.

Approach (style.md habit 8, after mitmproxy's Playbook and h11's
ConnectionPair). A ``Conversation`` owns a ``MemoryStore`` and the gateway's
in-memory ``Snapshot`` and plays the shell's part exactly: each request goes
through ``decide`` and its changes are applied to the store and the
snapshot; each admin, registry or preference event is applied the same way,
followed by live revocation (``affected_keys`` -> ``evaluate`` for held polls)
and ``refresh``. Time advances by ``step`` seconds per event, so first-seen
order is the order of the script. A forwarded request is answered by a
simulated backend that ACCEPTS it unless told otherwise (``accept=False``:
a 401, wrong password), as the proxy reports the upstream status: the first
accepted request verifies the row and may establish its device's backend
type. Names go through the one principal rule under ``realms`` and the
alias index, as in the gateway. Every step is appended to ``transcript``,
which failed expectations print::

    conv = Conversation(prefs=Preferences(auto_block_unregistered=True))
    conv.request("alice", "DEV1").expect_refuse(129, reasons={"AUTO_BLOCK"})
    conv.allow("alice", "DEV1", note="approved by helpdesk")
    conv.request("alice", "DEV1").expect_forward("exchange")

``req`` builds an ``EasRequest`` directly (no parser involved).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from sentry.eas.request import Command, EasRequest, Identity
from sentry.eas.status import WipeAckStatus
from sentry.model import (
    DEFAULT_SETTING_PRIORITY,
    NO_REALMS,
    THROWAWAY_DEVICE_IDS,
    Association,
    AssociationKey,
    Device,
    DeviceInformation,
    ExchangeSetting,
    Label,
    Platform,
    Pool,
    Preferences,
    Realms,
    Routing,
    UnlinkCause,
    User,
    canonical_device_id,
    canonical_principal,
    principal_domain,
)
from sentry.policy import admin, registry
from sentry.policy.affected import affected_keys
from sentry.policy.ambiguity import record_policy_fingerprint
from sentry.policy.changes import (
    Change,
    Changes,
    PutPool,
    PutPreferences,
    PutRealms,
    PutRouting,
    Touch,
)
from sentry.policy.decide import decide, evaluate, refresh
from sentry.policy.decisions import (
    Decision,
    Forward,
    Outcome,
    ProvisionKind,
    Refuse,
    RequestFacts,
    Wipe,
)
from sentry.policy.established import backend_accepted, reset_backend_type
from sentry.policy.expiry import expire_unverified
from sentry.policy.reasons import ordered
from sentry.policy.snapshot import Snapshot
from sentry.store.memory import MemoryStore

__all__ = ["DEFAULT_POOLS", "Conversation", "Reply", "describe", "req"]

DEFAULT_POOLS = (
    Pool("exchange", "exchange", ("https://exchange.test",)),
    Pool("gmail", "gmail", ("https://gmail.test",)),
)


def req(
    user: str,
    device: str,
    command: str | Command = "Sync",
    device_type: str = "iPhone",
    version: str | None = "16.1",
    *,
    user_agent: str | None = None,
    policy_key: int | None = None,
    realms: Realms = NO_REALMS,
) -> EasRequest:
    """An ``EasRequest`` as the parser would produce it (Basic-auth user)."""
    key = canonical_principal(user, realms)
    if key is None:
        raise ValueError(f"{user!r} names no principal")
    cmd = command if isinstance(command, Command) else Command(command)
    domain = principal_domain(key)
    return EasRequest(
        method="POST",
        command=cmd,
        user=Identity(key=key, raw=user, domain=domain, source="authorization"),
        device_id=canonical_device_id(device),
        device_id_raw=device,
        device_type=device_type,
        protocol_version=version,
        policy_key=policy_key,
        locale=None,
        user_agent=user_agent,
        is_throwaway_device=canonical_device_id(device) in THROWAWAY_DEVICE_IDS,
    )


def _default_email(principal: str) -> str:
    """``alice`` -> alice@corp.example; a qualified principal is its own address."""
    if "\\" in principal:
        return ""
    return principal if "@" in principal else f"{principal}@corp.example"


def describe(decision: Decision) -> str:
    """``Forward exchange``, ``Refuse 129 [AUTO_BLOCK]``, ``Wipe account_only=False``."""
    reasons = ",".join(r.value for r in ordered(decision.reasons))
    if isinstance(decision, Forward):
        head = f"Forward {decision.pool}"
    elif isinstance(decision, Refuse):
        head = f"Refuse {int(decision.status)}"
    else:
        head = f"Wipe account_only={decision.account_only}"
        if decision.acknowledged is not None:
            head += f" acknowledged={decision.acknowledged.name}"
    return f"{head} [{reasons}]" if reasons else head


class Reply:
    """One decided request, with transcript-style expectations (each returns self)."""

    def __init__(self, conv: Conversation, outcome: Outcome, line: str) -> None:
        self.conv = conv
        self.outcome = outcome
        self.decision = outcome.decision
        self.row = outcome.association
        self.line = line

    def expect_forward(self, pool: str | None = None, *, reasons: Iterable[str] = ()) -> Reply:
        """Forwarded (to ``pool`` when given), with exactly ``reasons``."""
        ok = isinstance(self.decision, Forward) and pool in (None, self.decision.pool)
        return self._check(ok and self._reasons_are(reasons), f"Forward {pool or ''}")

    def expect_refuse(self, status: int, *, reasons: Iterable[str] | None = None) -> Reply:
        """Refused with ``status``; with exactly ``reasons`` when given."""
        ok = isinstance(self.decision, Refuse) and int(self.decision.status) == status
        ok = ok and (reasons is None or self._reasons_are(reasons))
        return self._check(ok, f"Refuse {status} {sorted(reasons or ())}")

    def expect_wipe(self, account_only: bool | None = None) -> Reply:
        """Answered with the wipe directive (account-only when asked)."""
        d = self.decision
        ok = (
            isinstance(d, Wipe)
            and d.acknowledged is None
            and account_only in (None, d.account_only)
        )
        return self._check(ok, f"Wipe account_only={account_only}")

    def expect_wipe_ack(self, succeeded: bool, account_only: bool | None = None) -> Reply:
        """Answered as a wipe acknowledgement: Provision Status 1 (``succeeded``),
        or Status 2 with the directive again (MS-ASPROV 3.2.5.1.2.2)."""
        wanted = WipeAckStatus.Succeeded if succeeded else WipeAckStatus.Failed
        d = self.decision
        ok = (
            isinstance(d, Wipe)
            and d.acknowledged is wanted
            and account_only in (None, d.account_only)
        )
        return self._check(ok, f"Wipe acknowledged={wanted.name}")

    def expect_linked(self, device: str | None = None) -> Reply:
        """The row is linked (to managed device ``device`` when given)."""
        ok = self.row.device is not None and device in (None, self.row.device)
        return self._check(ok, f"linked to {device}")

    def expect_unlinked(self, cause: str) -> Reply:
        """The row is unlinked for ``cause`` (device_unknown, user_unknown, not_entitled)."""
        return self._check(self.row.unlinked is UnlinkCause(cause), f"unlinked ({cause})")

    def expect_verified(self, verified: bool = True) -> Reply:
        """The stored row is verified (the backend accepted it) or not."""
        row = self.conv.row_by_key(self.row.key)
        ok = row is not None and (row.verified_at is not None) is verified
        return self._check(ok, "verified" if verified else "unverified")

    def expect_touch_only(self) -> Reply:
        """Nothing but last-seen changed: the changes are one ``Touch``."""
        changes = self.outcome.changes
        ok = len(changes) == 1 and isinstance(changes[0], Touch)
        return self._check(ok, "only a Touch")

    def _reasons_are(self, reasons: Iterable[str]) -> bool:
        return {r.value for r in self.decision.reasons} == set(reasons)

    def _check(self, ok: bool, wanted: str) -> Reply:
        if not ok:
            row = f"device={self.row.device} unlinked={self.row.unlinked}"
            got = f"{describe(self.decision)}; row {row}"
            raise AssertionError(
                f"expected {wanted}\n  got {got}\n  at {self.line}\n{self.conv.render()}"
            )
        return self


class Conversation:
    """A scripted gateway: requests and admin events through the real policy."""

    def __init__(
        self,
        *,
        prefs: Preferences | None = None,
        pools: Iterable[Pool] = DEFAULT_POOLS,
        routing: Routing | None = None,
        start: float = 1_700_000_000.0,
        step: float = 1.0,
        actor: str = "admin@test",
        realms: Realms = NO_REALMS,
    ) -> None:
        routing = Routing(default="exchange") if routing is None else routing
        self.store = MemoryStore()
        self.snapshot = Snapshot()
        self.now, self.step, self.actor = start, step, actor
        self.registry_reachable = True
        self.held: set[AssociationKey] = set()
        self.revoked: list[tuple[AssociationKey, Decision]] = []
        self.transcript: list[str] = []
        self.log: list[Changes] = []  # every change list committed, in order
        seed: list[Change] = [PutRealms(realms), *(PutPool(p) for p in pools)]
        seed.append(PutRouting(registry.canonical_routing(routing, realms)))
        self._commit((*seed, PutPreferences(prefs or Preferences())))

    # --- Requests ---

    def request(
        self,
        user: str,
        device: str,
        command: str = "Sync",
        *,
        device_type: str = "iPhone",
        version: str | None = "16.1",
        user_agent: str | None = None,
        provision: ProvisionKind = ProvisionKind.NONE,
        wipe_status: int | None = None,
        device_info: DeviceInformation | None = None,
        accept: bool = True,
    ) -> Reply:
        """Send one request through ``decide`` and apply its changes; a
        forwarded one is then answered by the backend: accepted, or a 401
        (``accept=False``)."""
        request = req(
            user, device, command, device_type, version, user_agent=user_agent, realms=self.realms
        )
        status = None if wipe_status is None else WipeAckStatus(wipe_status)
        facts = RequestFacts(provision, status, device_info, self.registry_reachable)
        outcome = decide(request, facts, self.snapshot, self.snapshot.prefs, self._tick())
        self._commit(outcome.changes)
        line = f"{self.now:.0f} {user}@{device} {command} -> {describe(outcome.decision)}"
        if isinstance(outcome.decision, Forward):
            line += " (backend: accepted)" if accept else " (backend: 401)"
            if accept:
                self._shell(backend_accepted(self.snapshot, outcome.association.key, self.now))
        self.transcript.append(line)
        return Reply(self, outcome, line)

    @property
    def realms(self) -> Realms:
        return self.snapshot.realms

    def hold(self, user: str, device: str) -> None:
        """Pretend the association holds a long poll (for revocation checks)."""
        self.held.add(self.key(user, device))

    def wipe_ack(self, user: str, device: str, status: int = 1) -> Reply:
        """The client's RemoteWipe acknowledgement (Provision with a wipe Status)."""
        return self.request(
            user, device, "Provision", provision=ProvisionKind.WIPE_ACK, wipe_status=status
        )

    # --- Admin actions on one association ---

    def allow(self, user: str, device: str, note: str = "allowed in test") -> Changes:
        key = self.key(user, device)
        return self._admin("allow", admin.allow(self.snapshot, key, **self._who(note)))

    def block(self, user: str, device: str, note: str = "blocked in test") -> Changes:
        key = self.key(user, device)
        return self._admin("block", admin.block(self.snapshot, key, **self._who(note)))

    def reset(self, user: str, device: str, note: str = "reset in test") -> Changes:
        key = self.key(user, device)
        return self._admin("reset", admin.reset(self.snapshot, key, **self._who(note)))

    def preapprove(self, user: str, device: str, note: str = "pre-approved in test") -> Changes:
        """Pre-approve ``user`` (any spelling: the one rule and the aliases) on ``device``."""
        changes = admin.preapprove(self.snapshot, self.key(user, device), **self._who(note))
        return self._admin("preapprove", changes)

    def wipe(
        self, user: str, device: str, note: str = "wipe in test", *, account_only: bool = False
    ) -> Changes:
        key, who = self.key(user, device), self._who(note)
        return self._admin("wipe", admin.wipe(self.snapshot, key, account_only=account_only, **who))

    def remove(self, user: str, device: str, note: str = "removed in test") -> Changes:
        key = self.key(user, device)
        return self._admin("remove", admin.remove(self.snapshot, key, **self._who(note)))

    def link_to(
        self, user: str, device: str, device_id: str, note: str = "linked in test"
    ) -> Changes:
        key, who = self.key(user, device), self._who(note)
        return self._admin("link_to", admin.link_to(self.snapshot, key, device_id, **who))

    # --- Registry and configuration ---

    def add_user(
        self, principal: str, email: str | None = None, *, aliases: Iterable[str] = (), **attrs: Any
    ) -> Changes:
        key = canonical_principal(principal, self.realms)
        if key is None:
            raise ValueError(f"{principal!r} names no principal")
        mail = email if email is not None else _default_email(key)
        user = User(key, email=mail, aliases=frozenset(aliases), **attrs)
        return self._admin("user", registry.upsert_user(self.snapshot, user, **self._who()))

    def register_device(
        self,
        device_id: str,
        owner: str,
        eas_ids: Iterable[str] = (),
        platform: Platform = Platform.IOS,
        labels: Iterable[str] = (),
    ) -> Changes:
        device = Device(device_id, owner, platform, frozenset(eas_ids), labels=frozenset(labels))
        return self._admin("device", registry.register_device(self.snapshot, device, **self._who()))

    def set_compliance(self, device_id: str, *violations: str) -> Changes:
        changes = registry.set_compliance(self.snapshot, device_id, violations, **self._who())
        return self._admin("compliance", changes)

    def retire_device(self, device_id: str) -> Changes:
        return self._admin(
            "retire", registry.retire_device(self.snapshot, device_id, **self._who())
        )

    def set_prefs(self, **values: Any) -> Changes:
        prefs = replace(self.snapshot.prefs, **values)
        return self._admin("prefs", registry.set_preferences(self.snapshot, prefs, **self._who()))

    def add_pool(self, name: str, type: str) -> Changes:
        pool = Pool(name, type, (f"https://{name}.test",))
        return self._admin("pool", registry.put_pool(self.snapshot, pool, **self._who()))

    def set_routing(self, routing: Routing) -> Changes:
        return self._admin("routing", registry.set_routing(self.snapshot, routing, **self._who()))

    def add_setting(
        self, name: str, user_name: str, email: str, priority: int = DEFAULT_SETTING_PRIORITY
    ) -> Changes:
        setting = ExchangeSetting(name, user_name, email, "sentry.test", priority)
        return self._admin("setting", registry.put_setting(self.snapshot, setting, **self._who()))

    def add_label(self, name: str, settings: Iterable[str], devices: Iterable[str] = ()) -> Changes:
        label = Label(name, frozenset(settings), frozenset(devices))
        return self._admin("label", registry.put_label(self.snapshot, label, **self._who()))

    def reset_backend_type(
        self, scope: str, note: str = "reset in test", backend_type: str | None = None
    ) -> Changes:
        changes = reset_backend_type(
            self.snapshot, scope, backend_type=backend_type, **self._who(note)
        )
        return self._admin("reset_backend_type", changes)

    def expire(self, max_age: float) -> Changes:
        """The periodic sweep of unverified rows (time does not advance)."""
        return self._admin("expire", expire_unverified(self.snapshot, self.now, max_age))

    def advance(self, seconds: float) -> None:
        """Let time pass without any event."""
        self.now += seconds

    def record_policy(self, user: str, device: str, fingerprint: str | None) -> Changes:
        changes = record_policy_fingerprint(
            self.snapshot, self.key(user, device), fingerprint, self._tick()
        )
        return self._admin("policy", changes)

    # --- Reading ---

    def key(self, user: str, device: str) -> AssociationKey:
        """The association key of ``user`` on ``device`` (the one rule, then aliases)."""
        principal = self.snapshot.canonical(user)
        if principal is None:
            raise ValueError(f"{user!r} names no principal")
        return AssociationKey(canonical_device_id(device), principal)

    def row(self, user: str, device: str) -> Association | None:
        """The stored row of ``user`` on ``device`` (from the store, not memory)."""
        return self.row_by_key(self.key(user, device))

    def row_by_key(self, key: AssociationKey) -> Association | None:
        """The stored row with ``key`` (from the store, not memory)."""
        return self.store.load_now().get(key)

    def render(self) -> str:
        """The transcript so far, one event per line."""
        return "\n".join(f"  | {line}" for line in self.transcript)

    # --- The shell's part ---

    def _tick(self) -> float:
        self.now += self.step
        return self.now

    def _who(self, note: str = "") -> dict[str, Any]:
        return {"note": note, "actor": self.actor, "now": self._tick()}

    def _commit(self, changes: Changes) -> None:
        self.store.apply_now(changes)
        self.snapshot.apply(changes)
        if changes:
            self.log.append(changes)

    def _admin(self, what: str, changes: Changes) -> Changes:
        """Apply, revoke held polls that lost access, record new decisions."""
        self._shell(changes)
        self.transcript.append(f"{self.now:.0f} admin {what} ({len(changes)} changes)")
        return changes

    def _shell(self, changes: Changes) -> None:
        """What ``AccessState`` does with a change list: apply, revoke, refresh."""
        keys = affected_keys(changes, self.snapshot)
        self._commit(changes)
        prefs = self.snapshot.prefs
        for key in sorted(keys & self.held):
            decision = evaluate(key, self.snapshot, prefs, self.now)
            if not isinstance(decision, Forward):
                self.revoked.append((key, decision))
        self._commit(refresh(keys, self.snapshot, prefs, self.now))
