"""Step 3 of the EAS handler: read and decode only the bodies access control needs.

Provision, Settings, Ping and Sync bodies are read up to ``INSPECT_LIMIT`` and
decoded with matching WBXML limits; everything else streams through untouched.
A Sync body over the limit is streamed on uninspected (its hold time is then
unknown and the longest is assumed); any other inspected command that large is
refused with 413. What the body says becomes ``RequestFacts`` for the policy
and, for long polls, the requested hold time.
"""

from __future__ import annotations

from dataclasses import dataclass

from sentry.aio import read_upto
from sentry.eas.commands import INSPECTED, LONG_POLLS, BodyFacts, body_facts
from sentry.eas.request import Command, EasRequest
from sentry.eas.wbxml import Element, Limits, decode
from sentry.policy import RequestFacts

from .errors import RequestTooLarge
from .framing import decoded_for_inspection
from .h1message import DeviceRequest

__all__ = ["INSPECT_LIMIT", "Inspected", "inspect"]

INSPECT_LIMIT = 1024 * 1024
_INSPECT_LIMITS = Limits(max_size=INSPECT_LIMIT, max_string=INSPECT_LIMIT, max_opaque=INSPECT_LIMIT)
_WBXML = "application/vnd.ms-sync.wbxml"


@dataclass
class Inspected:
    """What step 3 learnt: the body (if read), facts and the hold time."""

    body: bytes | None
    facts: RequestFacts
    hold_seconds: int | None
    long_poll: bool


async def _read_prefix(request: DeviceRequest, limit: int) -> tuple[bytes, bool]:
    """Read up to ``limit`` bytes; return them and whether the body ended."""
    data = await read_upto(request.content, limit + 1)
    return data, len(data) <= limit


async def inspect(request: DeviceRequest, eas: EasRequest, coding: str | None = None) -> Inspected:
    """Read what the policy needs from the body (EasError/RequestTooLarge when
    bad). A body in a content ``coding`` is inspected decompressed and kept
    (and forwarded) as the raw bytes (FramingError when it cannot be read).
    What the body says is ``sentry.eas.commands.body_facts``."""
    command = eas.command
    if command is None or command not in INSPECTED:
        return Inspected(None, RequestFacts(), None, long_poll=False)
    body, complete = await _read_prefix(request, INSPECT_LIMIT)
    if not complete:
        if command is not Command.Sync:
            raise RequestTooLarge(INSPECT_LIMIT)
        request.prefix = body  # streamed on uninspected
        return Inspected(None, RequestFacts(), None, long_poll=command in LONG_POLLS)
    plain = decoded_for_inspection(body, coding, INSPECT_LIMIT)
    facts = body_facts(command, _decode(plain, request.headers.get("Content-Type")))
    return Inspected(body, _request_facts(facts), facts.hold_seconds, facts.long_poll)


def _decode(body: bytes, content_type: str | None) -> Element | None:
    if not body:
        return None
    if content_type is not None and not content_type.lower().startswith(_WBXML):
        return None
    return decode(body, _INSPECT_LIMITS)


def _request_facts(facts: BodyFacts) -> RequestFacts:
    return RequestFacts(facts.provision, facts.wipe_status, facts.device_info)
