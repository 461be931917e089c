"""The lifecycle of an association's admin state, as ONE table.

Approach (style.md habit 3, after h11's ``_state.py``). The admin-visible
state of a row is derived from its override and wipe status (``state_of``).
``TRANSITIONS[state][action]`` is the state after ``action``; a pair missing
from the table is not allowed and ``transition`` raises ``TransitionError``
(HTTP 409). Client events (the wipe acknowledgement) live in the same table.

Rules encoded below:

- Allow, Block, Wipe and Link To apply to any live row; re-issuing the same
  action updates its note (idempotent).
- Allow or Block on a pending or failed wipe cancels the wipe (as Exchange's
  "cancel wipe"): nothing has been erased yet.
- Reset returns an allowed or blocked row to automatic (NONE: the decision
  table alone decides). It does not apply to a wipe: a pending wipe is
  cancelled by Allow or Block first, so a reset never cancels one by accident.
- Pre-approve creates a row that does not exist yet (REMOVED) with an Allow
  (Exchange's personal exemption); an existing row is allowed with Allow.
- A wiped row accepts only Remove. Remove deletes the row (``REMOVED``).
- The client's wipe acknowledgement moves a pending or failed wipe to WIPED
  (status 1) or WIPE_FAILED (status 2: the wipe is repeated).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from sentry.model import Association, OverrideKind, WipeStatus

from .errors import TransitionError

__all__ = ["TRANSITIONS", "Action", "AdminState", "state_of", "transition"]


class AdminState(StrEnum):
    NONE = "none"  # no admin override: the decision table decides
    ALLOWED = "allowed"
    BLOCKED = "blocked"
    WIPE_PENDING = "wipe_pending"
    WIPE_FAILED = "wipe_failed"
    WIPED = "wiped"
    REMOVED = "removed"  # the row no longer exists


class Action(StrEnum):
    ALLOW = "allow"
    BLOCK = "block"
    WIPE = "wipe"
    REMOVE = "remove"
    LINK_TO = "link_to"
    RESET = "reset"  # back to automatic: clears Allow/Block
    PREAPPROVE = "preapprove"  # create the row, allowed, before its first request
    WIPE_ACK_OK = "wipe_ack_ok"  # client event: RemoteWipe Status 1
    WIPE_ACK_FAILED = "wipe_ack_failed"  # client event: RemoteWipe Status 2


_S, _A = AdminState, Action
_LIVE = {
    _A.ALLOW: _S.ALLOWED,
    _A.BLOCK: _S.BLOCKED,
    _A.WIPE: _S.WIPE_PENDING,
    _A.REMOVE: _S.REMOVED,
}
_ACKS = {_A.WIPE_ACK_OK: _S.WIPED, _A.WIPE_ACK_FAILED: _S.WIPE_FAILED}

TRANSITIONS: Mapping[AdminState, Mapping[Action, AdminState]] = {
    _S.NONE: {**_LIVE, _A.LINK_TO: _S.NONE, _A.RESET: _S.NONE},
    _S.ALLOWED: {**_LIVE, _A.LINK_TO: _S.ALLOWED, _A.RESET: _S.NONE},
    _S.BLOCKED: {**_LIVE, _A.LINK_TO: _S.BLOCKED, _A.RESET: _S.NONE},
    _S.WIPE_PENDING: {**_LIVE, _A.LINK_TO: _S.WIPE_PENDING, **_ACKS},
    _S.WIPE_FAILED: {**_LIVE, _A.LINK_TO: _S.WIPE_FAILED, **_ACKS},
    _S.WIPED: {_A.REMOVE: _S.REMOVED},
    _S.REMOVED: {_A.PREAPPROVE: _S.ALLOWED},
}
"""state -> action -> next state. Anything not listed is refused."""


def state_of(row: Association | None) -> AdminState:
    """The admin state of a row (None: the row does not exist)."""
    if row is None:
        return AdminState.REMOVED
    if row.wipe is not WipeStatus.NONE:
        return _WIPE_STATES[row.wipe]
    if row.override is None:
        return AdminState.NONE
    return _OVERRIDE_STATES[row.override.kind]


_WIPE_STATES = {
    WipeStatus.PENDING: AdminState.WIPE_PENDING,
    WipeStatus.FAILED: AdminState.WIPE_FAILED,
    WipeStatus.WIPED: AdminState.WIPED,
}
_OVERRIDE_STATES = {
    OverrideKind.ALLOW: AdminState.ALLOWED,
    OverrideKind.BLOCK: AdminState.BLOCKED,
    OverrideKind.WIPE: AdminState.WIPE_PENDING,  # not reached: a wipe sets ``wipe``
}


def transition(state: AdminState, action: Action) -> AdminState:
    """The state after ``action``; ``TransitionError`` if the table has no such pair."""
    target = TRANSITIONS[state].get(action)
    if target is None:
        allowed = ", ".join(a.value for a in TRANSITIONS[state]) or "nothing"
        raise TransitionError(
            f"cannot {action.value} an association in state {state.value} (allowed: {allowed})",
            state=state.value,
            action=action.value,
        )
    return target
