"""How long a request may be held by the backend, read from its body.

Ping and Sync are the long polls (eas-protocol.md §5). The proxy uses this to
set a per-request upstream deadline; None means "not a long poll, or the
client relies on values the backend cached", and the caller then applies its
configured maximum. Values are as requested: clamping is the caller's.
"""

from __future__ import annotations

from sentry.eas.request import Command
from sentry.eas.wbxml import Element

from .ping import parse_ping
from .sync import parse_sync

__all__ = ["long_poll_seconds"]


def long_poll_seconds(command: Command | None, body: Element | None) -> int | None:
    """Requested hold time in seconds (Ping HeartbeatInterval; Sync Wait x 60 or
    HeartbeatInterval), or None. ``BodyError`` if the body is malformed."""
    if body is None:
        return None
    if command is Command.Ping:
        return parse_ping(body).heartbeat_interval
    if command is Command.Sync:
        return parse_sync(body).hold_seconds
    return None
