"""Ping (MS-ASCMD 2.2.1.13; eas-protocol.md §5.1): only what a proxy needs.

The heartbeat tells the gateway how long the backend may hold the request;
the folder count is for logs. An empty Ping (no body) reuses the backend's
cached values; that case is the caller's, since there is nothing to parse.
"""

from __future__ import annotations

from dataclasses import dataclass

from sentry.eas.wbxml import Element

from ._fields import expect_root, int_child

__all__ = ["PingRequest", "parse_ping"]

NAMESPACE = "Ping"


@dataclass(frozen=True, slots=True)
class PingRequest:
    heartbeat_interval: int | None  # seconds; None: the cached value applies
    folder_count: int


def parse_ping(root: Element) -> PingRequest:
    """Read HeartbeatInterval and count Folders/Folder; ``BodyError`` if malformed."""
    expect_root(root, NAMESPACE, "Ping")
    folders = root.find("Folders", NAMESPACE)
    count = 0 if folders is None else len(list(folders.iter_children("Folder", NAMESPACE)))
    return PingRequest(int_child(root, "HeartbeatInterval", NAMESPACE), count)
