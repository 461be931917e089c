"""What access control learns from a request body, as one value (step 3 of the handler).

Approach. The proxy reads and decodes a body only for the commands access
control needs (``INSPECTED``); ``body_facts`` turns the decoded root (None:
an empty body) into ``BodyFacts``: the Provision step and wipe
acknowledgement, the DeviceInformation a Provision or Settings carries, and
for a Ping or Sync whether it is a long poll and the hold time it asks for.
A Sync with a body and neither Wait nor HeartbeatInterval is not a long
poll; an empty Sync body is (it repeats the previous one). Pure: malformed
bodies raise ``BodyError``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sentry.eas.request import Command
from sentry.eas.status import WipeAckStatus
from sentry.eas.wbxml import Element

from .longpoll import long_poll_seconds
from .provision import ProvisionKind, parse_provision
from .settings import DeviceInformation, parse_settings_device_information

__all__ = ["INSPECTED", "LONG_POLLS", "NO_FACTS", "BodyFacts", "body_facts"]

INSPECTED = frozenset({Command.Provision, Command.Settings, Command.Ping, Command.Sync})
"""The commands whose body access control reads."""
LONG_POLLS = frozenset({Command.Ping, Command.Sync})


@dataclass(frozen=True, slots=True)
class BodyFacts:
    """What one body says that access control and the proxy use."""

    provision: ProvisionKind = ProvisionKind.NONE
    wipe_status: WipeAckStatus | None = None  # with WIPE_ACK
    device_info: DeviceInformation | None = None
    hold_seconds: int | None = None  # a long poll's requested hold
    long_poll: bool = False


NO_FACTS = BodyFacts()


def body_facts(command: Command, root: Element | None) -> BodyFacts:
    """The facts of a body of ``command``, decoded to ``root`` (None: empty)."""
    if command is Command.Provision:
        if root is None:
            return BodyFacts(provision=ProvisionKind.EMPTY)
        prov = parse_provision(root)
        return BodyFacts(prov.kind, prov.wipe_ack, prov.device_information)
    if command is Command.Settings:
        info = None if root is None else parse_settings_device_information(root)
        return BodyFacts(device_info=info)
    if command not in LONG_POLLS:
        return NO_FACTS
    hold = long_poll_seconds(command, root)
    long_poll = not (command is Command.Sync and root is not None and hold is None)
    return BodyFacts(hold_seconds=hold, long_poll=long_poll)
