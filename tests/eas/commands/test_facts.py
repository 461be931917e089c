"""``body_facts``: what one body says for access control (moved from proxy/inspect.py)."""

from __future__ import annotations

import pytest

from sentry.eas.commands import NO_FACTS, BodyFacts, ProvisionKind, body_facts
from sentry.eas.request import Command
from sentry.eas.status import WipeAckStatus
from sentry.eas.xmlform import from_xml

WIPE_ACK = '<Provision xmlns="Provision"><RemoteWipe><Status>{}</Status></RemoteWipe></Provision>'


@pytest.mark.parametrize(
    ("status", "ack"), [(1, WipeAckStatus.Succeeded), (2, WipeAckStatus.Failed), (3, None)]
)
def test_a_wipe_acknowledgement_carries_its_status_as_the_enum(
    status: int, ack: WipeAckStatus | None
) -> None:
    facts = body_facts(Command.Provision, from_xml(WIPE_ACK.format(status)))
    assert facts == BodyFacts(provision=ProvisionKind.WIPE_ACK, wipe_status=ack)


def test_an_empty_provision_is_the_reaction_to_status_140() -> None:
    assert body_facts(Command.Provision, None).provision is ProvisionKind.EMPTY


def test_long_polls_and_their_hold_times() -> None:
    ping = '<Ping xmlns="Ping"><HeartbeatInterval>480</HeartbeatInterval></Ping>'
    assert body_facts(Command.Ping, from_xml(ping)) == BodyFacts(hold_seconds=480, long_poll=True)
    assert body_facts(Command.Sync, None).long_poll  # an empty Sync repeats the last one
    plain = '<Sync xmlns="AirSync"><Collections/></Sync>'
    assert not body_facts(Command.Sync, from_xml(plain)).long_poll  # no Wait: not held
    assert body_facts(Command.FolderSync, None) is NO_FACTS
