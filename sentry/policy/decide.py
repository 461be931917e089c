"""``decide``: one request in, one decision and the changes out.

Approach. The request's key is (canonical DeviceId, principal): the parser
canonicalised the user under the configured realms, and the snapshot's alias
index resolves a known name of a user (email, alias) to that user's
principal, so every spelling of one mailbox meets one row. The row is
*observed* first: created on first sight (so it is listed whatever the
decision), or updated when the request shows a new DeviceType, User-Agent,
protocol version or DeviceInformation; a wipe acknowledgement moves the wipe
state through the transition table. The table (``rules.assess``) then
decides, and the row records the decision. Nothing a request carries changes
a row's route (it follows from the key), so a refused request never changes
another row's decision or pool. A wipe acknowledgement of a row with a wipe
(pending, failed or done) is answered as such: ``Wipe`` with ``acknowledged``
set (Provision Status 1, or 2 and the directive again).

The changes describe exactly what differs from the stored row:

- first sight: ``PutAssociation`` + a ``first_seen`` history event;
- nothing changed: a single ``Touch`` (the hot path: no DB round trip, the
  shell batches Touches);
- otherwise: ``PutAssociation`` + history events for a new decision, a new
  link or a wipe acknowledgement.

A row an admin pre-approved is found by the device's first request like any
stored row; that request fills in what it shows and records a
``first_request`` event. A throwaway DeviceId (``validate``, ``webservice``)
is stored like any other (listed, blockable); the table never counts it for
limits and it never establishes a backend type. A new row is *unverified*
until the backend accepts one of its requests
(``established.backend_accepted``). During a
registry outage a known row keeps its last decision; a new row follows the
``new_device_access_when_registry_unreachable`` preference.

``evaluate`` answers for a stored row without a request (live revocation
after an admin, compliance or preference change) and ``refresh`` returns the
changes that record such re-evaluations.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import fields, replace
from operator import attrgetter
from typing import Any

from sentry.eas.request import EasRequest
from sentry.eas.status import WipeAckStatus
from sentry.model import (
    Association,
    AssociationKey,
    HistoryEvent,
    Reason,
    WipeStatus,
)
from sentry.slots import fast_constructor

from .ambiguity import device_ambiguous
from .changes import AppendHistory, Change, Changes, PutAssociation, Touch
from .decisions import Decision, Outcome, ProvisionKind, RequestFacts, Wipe
from .errors import UndecidableRequest
from .reasons import ordered
from .rules import Assessment, Candidate, assess, decision_of, stored_decision, verdict_of
from .snapshot import Snapshot
from .transitions import Action, AdminState, state_of, transition

# ~2x a frozen __init__ (sentry.slots): every field named, or all positionally in
# Association's order (a row rebuilt from its values)
_named_association = fast_constructor(Association, keywords=True)
_new_association = fast_constructor(Association)
_FIELD_NAMES = tuple(f.name for f in fields(Association))
_FIELD_AT = {name: i for i, name in enumerate(_FIELD_NAMES)}
_row_values = attrgetter(*_FIELD_NAMES)

__all__ = [
    "decide",
    "decision_detail",
    "evaluate",
    "options_pool",
    "refresh",
    "request_key",
    "with_assessment",
]


def request_key(request: EasRequest, snapshot: Snapshot) -> AssociationKey:
    """The association key of a POST; ``UndecidableRequest`` for anything else."""
    if request.method != "POST" or request.command is None:
        raise UndecidableRequest("OPTIONS is not decided: the shell forwards it")
    if request.user is None or not request.user.key:
        raise UndecidableRequest("a request without a user cannot be decided")
    if not request.device_id:
        raise UndecidableRequest("a request without a DeviceId cannot be decided")
    return AssociationKey(request.device_id, snapshot.principal_of(request.user.key))


def options_pool(snapshot: Snapshot, user: str | None) -> str | None:
    """The pool an OPTIONS request is asked of (it is routed, not decided): the
    pool of the user's mailbox, else the default pool; None: the gateway
    answers it itself."""
    route = snapshot.pool_for(snapshot.principal_of(user)) if user else None
    return route.name if route is not None else snapshot.routing.default


def _lookup_key(request: EasRequest, snapshot: Snapshot) -> tuple[str, str]:
    """A plain pair equal to the request's key (cheaper than an ``AssociationKey``)."""
    user = request.user
    if user is None or not user.key or not request.device_id or request.command is None:
        raise UndecidableRequest("OPTIONS, or a request without user or DeviceId, is not decided")
    return request.device_id, snapshot.principal_of(user.key)


def decide(request: EasRequest, facts: RequestFacts, snapshot: Snapshot, now: float) -> Outcome:
    """Decide one EAS request (design.md §4) under the snapshot's preferences;
    ``now`` is Unix seconds."""
    pair = _lookup_key(request, snapshot)
    old = snapshot.get(pair)
    if old is None:
        return _first_sight(pair, request, facts, snapshot, now)
    row = _observe(old, request, facts)
    events: tuple[HistoryEvent, ...] = ()
    if facts.provision is ProvisionKind.WIPE_ACK:
        row, events = _wipe_ack(row, facts, now)
    if facts.registry_reachable:
        assessment = assess(row, snapshot)
        row = with_assessment(row, assessment)
        decision = decision_of(assessment, row)
    else:
        decision = stored_decision(row, snapshot.prefs.refusal_style)
        row = _recorded(row, decision)
    if facts.provision is ProvisionKind.WIPE_ACK and old.wipe is not WipeStatus.NONE:
        decision = _acknowledged(decision, row, facts)
    if row is old:  # the hot path: nothing but last-seen moved
        return Outcome(decision, (Touch(old.key, now),), row)
    if old.never_seen:  # pre-approved by an admin: the device's first request
        events += (HistoryEvent(now, "first_request", decision_detail(row)),)
    return Outcome(decision, _changes(old, row, now, events), row)


def _first_sight(
    pair: tuple[str, str],
    request: EasRequest,
    facts: RequestFacts,
    snapshot: Snapshot,
    now: float,
) -> Outcome:
    """A new association: listed at once, whatever the decision."""
    key = AssociationKey(*pair)
    seen = Candidate(
        key, now, device_type=request.device_type, user_agent=request.user_agent,
        protocol_version=request.protocol_version, device_info=facts.device_info,
    )  # fmt: skip
    a = assess(seen, snapshot, new=True, reachable=facts.registry_reachable)
    pool, backend = (None, None) if a.pool is None else (a.pool.name, a.pool.type)
    row = _named_association(  # every field named (no override, no wipe, unverified)
        key=key,
        device_type=request.device_type,
        user_agent=request.user_agent,
        protocol_version=request.protocol_version,
        device_info=facts.device_info,
        first_seen=now,
        last_seen=now,
        device=a.device,
        unlinked=a.unlinked,
        manual_link=None,
        override=None,
        verdict=a.verdict,
        reasons=a.reasons,
        violations=a.violations,
        pool=pool,
        backend_type=backend,
        wipe=WipeStatus.NONE,
        policy_fingerprint=None,
        ambiguous_policy=_joins_ambiguous(key, snapshot),
        verified_at=None,
        access_rule=a.rule,
    )
    decision = decision_of(a, row)
    event = HistoryEvent(now, "first_seen", decision_detail(row))
    return Outcome(decision, (PutAssociation(row), AppendHistory(key, event)), row)


def _joins_ambiguous(key: AssociationKey, snapshot: Snapshot) -> bool:
    if snapshot.mailbox_count(key.device_id) < 2:
        return False
    return device_ambiguous(snapshot.on_device(key.device_id))


def evaluate(key: AssociationKey, snapshot: Snapshot, now: float) -> Decision:
    """The decision the association would get now, without a request.

    The key's user is resolved through the alias index first (a held poll
    keyed by a name that has since become a user's alias is decided as that
    user's row). A key with no row is evaluated as the fresh row the device's
    next request would create (no override, unverified, first seen ``now``).
    """
    key = AssociationKey(key.device_id, snapshot.principal_of(key.user))
    row = snapshot.get(key)
    if row is None:
        candidate = Candidate(key, now)
        return decision_of(assess(candidate, snapshot, new=True), candidate)
    return decision_of(assess(row, snapshot), row)


def refresh(
    keys: Iterable[AssociationKey],
    snapshot: Snapshot,
    now: float,
    *,
    assessed: dict[AssociationKey, Assessment] | None = None,
) -> Changes:
    """Re-evaluate stored rows; changes recording those whose decision or link moved.

    ``assessed``: filled with each row's assessment (the planner decides the
    held polls of those rows from it instead of assessing them again)."""
    out: list[Change] = []
    for key in sorted(keys):
        row = snapshot.get(key)
        if row is None:
            continue
        a = assess(row, snapshot)
        if assessed is not None:
            assessed[key] = a
        new = with_assessment(row, a)
        if new is not row:
            out.append(PutAssociation(new))
            out.extend(AppendHistory(key, e) for e in _transition_events(row, new, now))
    return tuple(out)


def with_assessment(row: Association, a: Assessment) -> Association:
    """``row`` recording assessment ``a`` (the same object when nothing differs)."""
    pool = None if a.pool is None else a.pool.name
    backend = None if a.pool is None else a.pool.type
    if (
        row.verdict is a.verdict
        and row.reasons == a.reasons
        and row.violations == a.violations
        and row.device == a.device
        and row.unlinked is a.unlinked
        and row.pool == pool
        and row.backend_type == backend
        and row.access_rule == a.rule
    ):
        return row
    values = list(_row_values(row))  # ``replace`` without its per-call introspection
    for name, value in (
        ("verdict", a.verdict), ("reasons", a.reasons), ("violations", a.violations),
        ("device", a.device), ("unlinked", a.unlinked), ("pool", pool),
        ("backend_type", backend), ("access_rule", a.rule),
    ):  # fmt: skip
        values[_FIELD_AT[name]] = value
    return _new_association(*values)


def _recorded(row: Association, decision: Decision) -> Association:
    """``row`` recording a decision kept through an outage (only a wipe ack moves it)."""
    verdict = verdict_of(decision)
    if row.verdict is verdict and row.reasons == decision.reasons:
        return row
    return replace(row, verdict=verdict, reasons=decision.reasons)


def _observe(old: Association, request: EasRequest, facts: RequestFacts) -> Association:
    """The row with what this request shows about the device; ``old`` if nothing new.

    Only descriptive fields move: the route follows from the key."""
    agent, version, info = request.user_agent, request.protocol_version, facts.device_info
    if (
        request.device_type == old.device_type
        and (agent is None or agent == old.user_agent)
        and (version is None or version == old.protocol_version)
        and (info is None or info == old.device_info)
    ):
        return old
    return replace(
        old,
        device_type=request.device_type,
        user_agent=agent or old.user_agent,
        protocol_version=version or old.protocol_version,
        device_info=info or old.device_info,
    )


_ACK_TARGET = {AdminState.WIPED: WipeStatus.WIPED, AdminState.WIPE_FAILED: WipeStatus.FAILED}


def _wipe_ack(
    row: Association, facts: RequestFacts, now: float
) -> tuple[Association, tuple[HistoryEvent, ...]]:
    """Apply the client's RemoteWipe acknowledgement (ignored when no wipe is due)."""
    state = state_of(row)
    if state not in (AdminState.WIPE_PENDING, AdminState.WIPE_FAILED):
        return row, ()
    ok = facts.wipe_status == WipeAckStatus.Succeeded
    wipe = _ACK_TARGET[transition(state, Action.WIPE_ACK_OK if ok else Action.WIPE_ACK_FAILED)]
    status = None if facts.wipe_status is None else int(facts.wipe_status)
    event = HistoryEvent(now, "wipe_ack", {"status": status, "wipe": wipe.value})
    return replace(row, wipe=wipe), (event,)


def _acknowledged(decision: Decision, row: Association, facts: RequestFacts) -> Wipe:
    """The answer to a wipe acknowledgement (MS-ASPROV 3.2.5.1.2.2); a status
    other than 1 counts as a failure, so the directive is repeated."""
    ok = facts.wipe_status == WipeAckStatus.Succeeded
    status = WipeAckStatus.Succeeded if ok else WipeAckStatus.Failed
    only = row.override is not None and row.override.account_only
    return Wipe(only, decision.reasons | {Reason.WIPE}, decision.violations, status, decision.rule)


def _changes(
    old: Association, row: Association, now: float, events: tuple[HistoryEvent, ...]
) -> Changes:
    key = row.key
    history = events + _transition_events(old, row, now)
    return (PutAssociation(replace(row, last_seen=now)), *(AppendHistory(key, e) for e in history))


def _transition_events(old: Association, new: Association, now: float) -> tuple[HistoryEvent, ...]:
    events: list[HistoryEvent] = []
    if (
        old.verdict is not new.verdict
        or old.reasons != new.reasons
        or old.access_rule != new.access_rule
    ):
        change = {"before": decision_detail(old), "after": decision_detail(new)}
        events.append(HistoryEvent(now, "decision", change))
    if old.device != new.device or old.unlinked is not new.unlinked:
        link = {"device": new.device, "unlinked": new.unlinked}
        events.append(HistoryEvent(now, "link", link))
    return tuple(events)


def decision_detail(row: Association) -> dict[str, Any]:
    """A small dict describing a row's decision (history and audit records);
    ``rule`` names the device access rule that matched, when one did.

    JSON-ready as built (enum values as plain strings, lists): the store
    writes it without converting it first (``codec.compact``), and a bulk
    action builds a thousand of them.
    """
    unlinked = row.unlinked  # ``_value_``: the value without the ``value`` property's cost
    detail: dict[str, Any] = {
        "verdict": row.verdict._value_,
        "reasons": list(_reason_values(row.reasons)) if row.reasons else [],
        "violations": sorted(row.violations) if row.violations else [],
        "device": row.device,
        "unlinked": None if unlinked is None else unlinked._value_,
        "pool": row.pool,
    }
    if row.access_rule is not None:  # the device access rule that matched
        detail["rule"] = row.access_rule
    return detail


@functools.lru_cache(maxsize=256)
def _reason_values(reasons: frozenset[Reason]) -> tuple[str, ...]:
    """The reasons' values in decision-table order (few distinct sets: cached)."""
    return tuple(r.value for r in ordered(reasons))
