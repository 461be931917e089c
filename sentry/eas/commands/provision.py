"""Provision requests (MS-ASPROV 3.1.5.1; eas-protocol.md §3): which step is this?

Approach. Access control needs the step of the provisioning dance, not the
policy document, so ``parse_provision`` classifies the request:

* WIPE_ACK     ``RemoteWipe/Status`` or ``AccountOnlyRemoteWipe/Status``: the
               client reports a wipe (a full wipe wins if both appear);
* EMPTY        ``<Provision/>``, sent in reaction to status 140;
* ACKNOWLEDGE  ``Policies/Policy`` with a ``PolicyKey`` or ``Status``;
* INITIAL      anything else (``PolicyType`` only, optionally preceded by
               ``settings:DeviceInformation``, which 14.1+ clients must send).

PolicyKey is read as the uint32 the gateway issues (§3.1); statuses as integers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum, StrEnum

from sentry.eas.errors import BodyError
from sentry.eas.status import WipeAckStatus
from sentry.eas.wbxml import Element, encode

from ._fields import bounded_text, expect_root, int_child
from .settings import DeviceInformation, device_information_from

__all__ = [
    "ProvisionKind",
    "ProvisionRequest",
    "WipeKind",
    "parse_provision",
    "policy_fingerprint",
]

NAMESPACE = "Provision"
_MAX_POLICY_KEY = 0xFFFFFFFF


class ProvisionKind(StrEnum):
    """The step of provisioning a request is (the one enum: the policy's
    ``RequestFacts.provision`` is this too)."""

    NONE = "none"  # not a Provision request
    INITIAL = "initial"  # Policies/Policy/PolicyType, no key
    ACKNOWLEDGE = "acknowledge"  # the policy acknowledgement (temporary key)
    WIPE_ACK = "wipe_ack"  # RemoteWipe/AccountOnlyRemoteWipe with a Status
    EMPTY = "empty"  # <Provision/>, the reaction to status 140


class WipeKind(Enum):
    """Which wipe a WIPE_ACK reports; the value is the Provision tag."""

    FULL = "RemoteWipe"
    ACCOUNT_ONLY = "AccountOnlyRemoteWipe"


@dataclass(frozen=True, slots=True)
class ProvisionRequest:
    kind: ProvisionKind
    policy_type: str | None = None
    policy_key: int | None = None  # acknowledgement: the temporary key
    policy_status: int | None = None  # acknowledgement: 1 applied .. 4 third party
    wipe: WipeKind | None = None
    wipe_status: int | None = None  # the Status as sent; see wipe_ack
    device_information: DeviceInformation | None = None

    @property
    def wipe_ack(self) -> WipeAckStatus | None:
        """The reported Status as a ``WipeAckStatus``; None when absent or a
        value the protocol does not define (counted as a failure)."""
        if self.wipe_status is None:
            return None
        try:
            return WipeAckStatus(self.wipe_status)
        except ValueError:
            return None

    @property
    def wipe_succeeded(self) -> bool:
        return self.wipe_ack is WipeAckStatus.Succeeded


def parse_provision(root: Element) -> ProvisionRequest:
    """Classify a Provision request body; ``BodyError`` if it is malformed."""
    expect_root(root, NAMESPACE, "Provision")
    wipe = _wipe_ack(root)
    if wipe is not None:
        return wipe
    if not root.content:
        return ProvisionRequest(ProvisionKind.EMPTY)
    policies = root.find("Policies", NAMESPACE)
    policy = None if policies is None else policies.find("Policy", NAMESPACE)
    key = _policy_key(policy)
    status = int_child(policy, "Status", NAMESPACE)
    acknowledged = key is not None or status is not None
    return ProvisionRequest(
        kind=ProvisionKind.ACKNOWLEDGE if acknowledged else ProvisionKind.INITIAL,
        policy_type=None if policy is None else bounded_text(policy, "PolicyType", NAMESPACE),
        policy_key=key,
        policy_status=status,
        device_information=device_information_from(root),
    )


def _wipe_ack(root: Element) -> ProvisionRequest | None:
    for kind in WipeKind:
        element = root.find(kind.value, NAMESPACE)
        if element is None:
            continue
        status = int_child(element, "Status", NAMESPACE)
        if status is None:
            raise BodyError(f"Provision:{kind.value} acknowledgement has no Status")
        return ProvisionRequest(ProvisionKind.WIPE_ACK, wipe=kind, wipe_status=status)
    return None


def _policy_key(policy: Element | None) -> int | None:
    key = int_child(policy, "PolicyKey", NAMESPACE)
    if key is not None and key > _MAX_POLICY_KEY:
        raise BodyError(f"Provision:PolicyKey {key} does not fit in 32 bits")
    return key


def policy_fingerprint(response: Element) -> str | None:
    """A short stable name for the policy a Provision *response* carries.

    Two associations whose backends sent the same ``Policies/Policy/Data``
    (the EASProvisionDoc) get the same fingerprint; different policies on one
    device's mailboxes are what the gateway flags as ambiguous. None when the
    response carries no policy data (the acknowledgement, a wipe, an error).
    """
    if response.namespace != NAMESPACE or response.tag != "Provision":
        return None
    data = response.find_path("Policies", "Policy", "Data")
    if data is None:
        return None
    return hashlib.sha256(encode(data)).hexdigest()[:16]
