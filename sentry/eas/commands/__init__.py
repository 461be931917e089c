"""Command bodies, read only as far as access control needs them.

Each parser is a pure function over a decoded ``Element`` that returns a
frozen value or raises ``BodyError``: Provision (which step of provisioning or
wipe), Settings DeviceInformation, and the Ping/Sync hold times; ``facts``
gathers what one body says for access control (``body_facts``).
"""

from __future__ import annotations

from .facts import INSPECTED, LONG_POLLS, NO_FACTS, BodyFacts, body_facts
from .longpoll import long_poll_seconds
from .ping import PingRequest, parse_ping
from .provision import (
    ProvisionKind,
    ProvisionRequest,
    WipeKind,
    parse_provision,
    policy_fingerprint,
)
from .settings import DeviceInformation, device_information_from, parse_settings_device_information
from .sync import SyncRequest, parse_sync

__all__ = [
    "INSPECTED",
    "LONG_POLLS",
    "NO_FACTS",
    "BodyFacts",
    "DeviceInformation",
    "PingRequest",
    "ProvisionKind",
    "ProvisionRequest",
    "SyncRequest",
    "WipeKind",
    "body_facts",
    "device_information_from",
    "long_poll_seconds",
    "parse_ping",
    "parse_provision",
    "parse_settings_device_information",
    "parse_sync",
    "policy_fingerprint",
]
