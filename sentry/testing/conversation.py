"""Scripted conversations: policy tests that read like a transcript.

Approach (style.md habit 8, after mitmproxy's Playbook and h11's
ConnectionPair). A ``Conversation`` owns the gateway's real ``AccessState``
over a ``MemoryStore``, so scenario tests exercise the one commit path the
proxy and the admin API use, not a copy of it: each request goes through
``AccessState.decide`` (its last-seen Touch is flushed to the store at
once), and each admin, registry or preference event through
``AccessState.commit`` (store write, then the planner: snapshot, live
revocation of held polls, refreshed decisions). The access state runs on a
private event loop in a daemon thread, so the script stays synchronous in
plain and in async tests alike. A held poll (``hold``) stays held: each
revocation is recorded in ``revoked`` and the device is taken to poll again
at once. Time advances by ``step`` seconds per event, so first-seen order is
the order of the script. A forwarded request is answered by a
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

``req`` builds an ``EasRequest`` directly (no parser involved); it, ``Reply``
and ``describe`` live in ``sentry.testing.replies`` and are re-exported here.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry

from sentry.access import AccessState, Build
from sentry.eas.request import EasRequest
from sentry.eas.status import WipeAckStatus
from sentry.longpolls import HeldPoll, LongPolls
from sentry.model import (
    DEFAULT_SETTING_PRIORITY,
    NO_REALMS,
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
    User,
    canonical_device_id,
    canonical_principal,
)
from sentry.observability import Metrics
from sentry.policy import admin, registry
from sentry.policy.ambiguity import record_policy_fingerprint
from sentry.policy.changes import (
    Change,
    Changes,
    PutPool,
    PutPreferences,
    PutRealms,
    PutRouting,
)
from sentry.policy.decisions import (
    Decision,
    Forward,
    Outcome,
    ProvisionKind,
    RequestFacts,
)
from sentry.policy.established import reset_backend_type
from sentry.policy.expiry import expire_unverified
from sentry.policy.snapshot import Snapshot
from sentry.store.memory import MemoryStore
from sentry.testing.replies import Reply, describe, req

__all__ = ["DEFAULT_POOLS", "Conversation", "Reply", "describe", "req"]

T = TypeVar("T")

DEFAULT_POOLS = (
    Pool("exchange", "exchange", ("https://exchange.test",)),
    Pool("gmail", "gmail", ("https://gmail.test",)),
)


def _default_email(principal: str) -> str:
    """``alice`` -> alice@corp.example; a qualified principal is its own address."""
    if "\\" in principal:
        return ""
    return principal if "@" in principal else f"{principal}@corp.example"


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
        self.log: list[Changes] = []  # every change list written to the store, in order
        self.store = _LoggedStore(self.log)
        self.now, self.step, self.actor = start, step, actor
        self.registry_reachable = True
        self.revoked: list[tuple[AssociationKey, Decision]] = []
        self._polls = _HeldPolls(self.revoked)
        self.state = AccessState(
            self.store,
            Snapshot(),
            _metrics(),
            clock=lambda: self.now,
            unverified_expiry_seconds=0,
            longpolls=self._polls,
        )
        self.transcript: list[str] = []
        seed: list[Change] = [PutRealms(realms), *(PutPool(p) for p in pools)]
        seed.append(PutRouting(registry.canonical_routing(routing, realms)))
        seeded = (*seed, PutPreferences(prefs or Preferences()))
        self._commit(lambda _snapshot, _now: seeded)

    @property
    def snapshot(self) -> Snapshot:
        """The access state's in-memory snapshot."""
        return self.state.snapshot

    @property
    def held(self) -> set[AssociationKey]:
        """The associations that hold a long poll (``hold``)."""
        return self._polls.held

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
        self._tick()
        outcome = _run(self._request(request, facts, accept))
        line = f"{self.now:.0f} {user}@{device} {command} -> {describe(outcome.decision)}"
        if isinstance(outcome.decision, Forward):
            line += " (backend: accepted)" if accept else " (backend: 401)"
        self.transcript.append(line)
        return Reply(self, outcome, line)

    async def _request(self, request: EasRequest, facts: RequestFacts, accept: bool) -> Outcome:
        """What the proxy does: decide (committing what changed), report the
        backend's answer to a forwarded request, and (here at once) write the
        last-seen Touch."""
        outcome = await self.state.decide(request, facts)
        if isinstance(outcome.decision, Forward):
            await self.state.backend_answered(outcome.association.key, 200 if accept else 401)
        await self.state.flush_touches()
        return outcome

    @property
    def realms(self) -> Realms:
        return self.snapshot.realms

    def hold(self, user: str, device: str) -> None:
        """Pretend the association holds a long poll (for revocation checks)."""
        self.held.add(self.key(user, device))

    def wipe_ack(self, user: str, device: str, status: int = WipeAckStatus.Succeeded) -> Reply:
        """The client's RemoteWipe acknowledgement (Provision with a wipe Status)."""
        return self.request(
            user, device, "Provision", provision=ProvisionKind.WIPE_ACK, wipe_status=status
        )

    # --- Admin actions on one association ---

    def allow(self, user: str, device: str, note: str = "allowed in test") -> Changes:
        key, who = self.key(user, device), self._who(note)
        return self._admin("allow", lambda snap, now: admin.allow(snap, key, now=now, **who))

    def block(self, user: str, device: str, note: str = "blocked in test") -> Changes:
        key, who = self.key(user, device), self._who(note)
        return self._admin("block", lambda snap, now: admin.block(snap, key, now=now, **who))

    def reset(self, user: str, device: str, note: str = "reset in test") -> Changes:
        key, who = self.key(user, device), self._who(note)
        return self._admin("reset", lambda snap, now: admin.reset(snap, key, now=now, **who))

    def preapprove(self, user: str, device: str, note: str = "pre-approved in test") -> Changes:
        """Pre-approve ``user`` (any spelling: the one rule and the aliases) on ``device``."""
        key, who = self.key(user, device), self._who(note)
        return self._admin(
            "preapprove", lambda snap, now: admin.preapprove(snap, key, now=now, **who)
        )

    def wipe(
        self, user: str, device: str, note: str = "wipe in test", *, account_only: bool = False
    ) -> Changes:
        key, who = self.key(user, device), self._who(note)
        return self._admin(
            "wipe",
            lambda snap, now: admin.wipe(snap, key, account_only=account_only, now=now, **who),
        )

    def remove(self, user: str, device: str, note: str = "removed in test") -> Changes:
        key, who = self.key(user, device), self._who(note)
        return self._admin("remove", lambda snap, now: admin.remove(snap, key, now=now, **who))

    def link_to(
        self, user: str, device: str, device_id: str, note: str = "linked in test"
    ) -> Changes:
        key, who = self.key(user, device), self._who(note)
        return self._admin(
            "link_to", lambda snap, now: admin.link_to(snap, key, device_id, now=now, **who)
        )

    # --- Registry and configuration ---

    def add_user(
        self, principal: str, email: str | None = None, *, aliases: Iterable[str] = (), **attrs: Any
    ) -> Changes:
        key = canonical_principal(principal, self.realms)
        if key is None:
            raise ValueError(f"{principal!r} names no principal")
        mail = email if email is not None else _default_email(key)
        user = User(key, email=mail, aliases=frozenset(aliases), **attrs)
        who = self._who()
        return self._admin(
            "user", lambda snap, now: registry.upsert_user(snap, user, now=now, **who)
        )

    def register_device(
        self,
        device_id: str,
        owner: str,
        eas_ids: Iterable[str] = (),
        platform: Platform = Platform.IOS,
        labels: Iterable[str] = (),
    ) -> Changes:
        device = Device(device_id, owner, platform, frozenset(eas_ids), labels=frozenset(labels))
        who = self._who()
        return self._admin(
            "device", lambda snap, now: registry.register_device(snap, device, now=now, **who)
        )

    def set_compliance(self, device_id: str, *violations: str) -> Changes:
        who = self._who()
        return self._admin(
            "compliance",
            lambda snap, now: registry.set_compliance(snap, device_id, violations, now=now, **who),
        )

    def retire_device(self, device_id: str) -> Changes:
        who = self._who()
        return self._admin(
            "retire", lambda snap, now: registry.retire_device(snap, device_id, now=now, **who)
        )

    def set_prefs(self, **values: Any) -> Changes:
        who = self._who()

        def build(snap: Snapshot, now: float) -> Changes:
            prefs = replace(snap.prefs, **values)
            return registry.set_preferences(snap, prefs, now=now, **who)

        return self._admin("prefs", build)

    def add_pool(self, name: str, type: str) -> Changes:
        pool = Pool(name, type, (f"https://{name}.test",))
        who = self._who()
        return self._admin("pool", lambda snap, now: registry.put_pool(snap, pool, now=now, **who))

    def set_routing(self, routing: Routing) -> Changes:
        who = self._who()
        return self._admin(
            "routing", lambda snap, now: registry.set_routing(snap, routing, now=now, **who)
        )

    def add_setting(
        self, name: str, user_name: str, email: str, priority: int = DEFAULT_SETTING_PRIORITY
    ) -> Changes:
        setting = ExchangeSetting(name, user_name, email, "sentry.test", priority)
        who = self._who()
        return self._admin(
            "setting", lambda snap, now: registry.put_setting(snap, setting, now=now, **who)
        )

    def add_label(self, name: str, settings: Iterable[str], devices: Iterable[str] = ()) -> Changes:
        label = Label(name, frozenset(settings), frozenset(devices))
        who = self._who()
        return self._admin(
            "label", lambda snap, now: registry.put_label(snap, label, now=now, **who)
        )

    def reset_backend_type(
        self, scope: str, note: str = "reset in test", backend_type: str | None = None
    ) -> Changes:
        who = self._who(note)
        return self._admin(
            "reset_backend_type",
            lambda snap, now: reset_backend_type(
                snap, scope, backend_type=backend_type, now=now, **who
            ),
        )

    def expire(self, max_age: float) -> Changes:
        """The periodic sweep of unverified rows (time does not advance)."""
        return self._admin(
            "expire", lambda snap, now: expire_unverified(snap, now, max_age), tick=False
        )

    def advance(self, seconds: float) -> None:
        """Let time pass without any event."""
        self.now += seconds

    def record_policy(self, user: str, device: str, fingerprint: str | None) -> Changes:
        """The backend's Provision answer carried ``fingerprint`` (what the proxy records)."""
        key = self.key(user, device)
        return self._admin(
            "policy", lambda snap, now: record_policy_fingerprint(snap, key, fingerprint, now)
        )

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
        return {"note": note, "actor": self.actor}

    def _commit(self, build: Build) -> Changes:
        """``AccessState.commit``, the gateway's one write path."""
        return _run(self.state.commit(build)).changes

    def _admin(self, what: str, build: Build, *, tick: bool = True) -> Changes:
        """Commit an admin, registry or configuration change (built under the
        writer lock at the next tick): store, snapshot, revocation, refresh."""
        if tick:
            self._tick()
        changes = self._commit(build)
        self.transcript.append(f"{self.now:.0f} admin {what} ({len(changes)} changes)")
        return changes


class _LoggedStore(MemoryStore):
    """A ``MemoryStore`` that keeps every change list it is given (``Conversation.log``)."""

    def __init__(self, log: list[Changes]) -> None:
        super().__init__()
        self._log = log

    def apply_now(self, changes: Sequence[Change]) -> None:
        super().apply_now(changes)
        if changes:
            self._log.append(tuple(changes))


_NO_TASK: Any = None  # the held polls of a conversation have no task to cancel


class _HeldPolls(LongPolls[AssociationKey, Decision]):
    """Held polls that stay held: every revocation is recorded, as if the
    device polled again at once (a poll is revoked at each change that
    refuses it)."""

    def __init__(self, revoked: list[tuple[AssociationKey, Decision]]) -> None:
        super().__init__()
        self.held: set[AssociationKey] = set()
        self._revoked = revoked

    def keys(self) -> set[AssociationKey]:
        return self.held

    def mark(
        self, key: AssociationKey, decision: Decision
    ) -> list[HeldPoll[AssociationKey, Decision]]:
        if key not in self.held:
            return []
        self._revoked.append((key, decision))
        poll: HeldPoll[AssociationKey, Decision] = HeldPoll(key, "Ping", _NO_TASK)
        poll.revoked_by = decision
        return [poll]

    def end(self, polls: Iterable[HeldPoll[AssociationKey, Decision]]) -> None:
        """Nothing to cancel: the device is taken to have polled again."""


_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()
_shared_metrics: Metrics | None = None


def _metrics() -> Metrics:
    """One metrics registry for every conversation (the counters are not read)."""
    global _shared_metrics
    if _shared_metrics is None:
        _shared_metrics = Metrics(CollectorRegistry())
    return _shared_metrics


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to its end on the conversations' event loop (a daemon
    thread), from synchronous code or from inside another running loop."""
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(
                target=_loop.run_forever, name="sentry-conversation", daemon=True
            ).start()
    return asyncio.run_coroutine_threadsafe(coro, _loop).result()
