"""Sync as a long poll (MS-ASCMD 2.2.3.198, 2.2.3.88.2; eas-protocol.md §5.2).

``Wait`` (minutes) or ``HeartbeatInterval`` (seconds) directly below ``Sync``
turns a Sync into a long poll. Range checks (Status 14) are the backend's; the
gateway only needs the requested hold time to size its upstream timeout.
"""

from __future__ import annotations

from dataclasses import dataclass

from sentry.eas.wbxml import Element

from ._fields import expect_root, int_child

__all__ = ["SyncRequest", "parse_sync"]

NAMESPACE = "AirSync"


@dataclass(frozen=True, slots=True)
class SyncRequest:
    wait_minutes: int | None
    heartbeat_interval: int | None  # seconds

    @property
    def hold_seconds(self) -> int | None:
        """How long the backend may hold the request; the longer when both are sent
        (the backend answers that with Status 4, but a timeout must not cut it)."""
        holds = [s for s in (self.wait_seconds, self.heartbeat_interval) if s is not None]
        return max(holds) if holds else None

    @property
    def wait_seconds(self) -> int | None:
        return None if self.wait_minutes is None else self.wait_minutes * 60


def parse_sync(root: Element) -> SyncRequest:
    """Read Wait and HeartbeatInterval; ``BodyError`` if either is not an integer."""
    expect_root(root, NAMESPACE, "Sync")
    return SyncRequest(
        wait_minutes=int_child(root, "Wait", NAMESPACE),
        heartbeat_interval=int_child(root, "HeartbeatInterval", NAMESPACE),
    )
