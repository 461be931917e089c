"""What goes into ``decide`` besides the request, and what comes out.

Approach. ``RequestFacts`` is what the shell read from the body (Provision
kind, wipe acknowledgement, DeviceInformation) plus whether the device
registry is reachable. A decision is one of three frozen values, all data:

- ``Forward(pool, backend_type)``: send the request to a server of the pool;
- ``Refuse(status, style=...)``: answer with the refusal (129, or 177 when a
  device limit is the only refusing reason), in the refusal style of the
  preferences it was decided under (the body status, or 403);
- ``Wipe(account_only)``: answer with the wipe: Provision gets RemoteWipe
  (AccountOnlyRemoteWipe only at 16.1, else the full wipe), any other command
  status 140 RemoteWipeRequested. With ``acknowledged`` set, the request was
  the client's wipe acknowledgement and the answer is Provision Status 1
  (succeeded) or Status 2 with the directive again (failed), MS-ASPROV
  3.2.5.1.2.2 (``sentry.policy.answers`` turns a decision into bytes).

Each carries every reason that applied (``reasons``), the compliance
``violations`` and the device access ``rule`` that matched (its name; the
reason RULE_ALLOW, RULE_BLOCK or QUARANTINE says what it did), for logs and
the admin list. ``Outcome`` adds the changes to
apply and the association as it now stands (linked device or unlink cause).
"""

from __future__ import annotations

from dataclasses import dataclass

from sentry.eas.commands.provision import ProvisionKind
from sentry.eas.status import CommonStatus, WipeAckStatus
from sentry.model import Association, DeviceInformation, Reason, RefusalStyle

from .changes import Changes

__all__ = [
    "Decision",
    "Forward",
    "Outcome",
    "ProvisionKind",
    "Refuse",
    "RequestFacts",
    "Wipe",
]


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the shell learnt from the body and the environment."""

    provision: ProvisionKind = ProvisionKind.NONE
    wipe_status: WipeAckStatus | None = None  # with WIPE_ACK
    device_info: DeviceInformation | None = None
    registry_reachable: bool = True


DEFAULT_FACTS = RequestFacts()


@dataclass(frozen=True, slots=True)
class Forward:
    pool: str
    backend_type: str
    reasons: frozenset[Reason] = frozenset()
    violations: frozenset[str] = frozenset()
    rule: str | None = None


@dataclass(frozen=True, slots=True)
class Refuse:
    status: CommonStatus
    reasons: frozenset[Reason] = frozenset()
    violations: frozenset[str] = frozenset()
    style: RefusalStyle = RefusalStyle.STATUS  # how the wire answer looks
    rule: str | None = None


@dataclass(frozen=True, slots=True)
class Wipe:
    account_only: bool
    reasons: frozenset[Reason] = frozenset({Reason.WIPE})
    violations: frozenset[str] = frozenset()
    acknowledged: WipeAckStatus | None = None  # this request acknowledged the wipe
    rule: str | None = None


Decision = Forward | Refuse | Wipe


@dataclass(frozen=True, slots=True)
class Outcome:
    """The decision, the changes to apply, and the association as it now stands.

    For a throw-away DeviceId ``association`` is the transient row (never
    persisted: ``changes`` is empty).
    """

    decision: Decision
    changes: Changes
    association: Association
