"""EAS protocol versions: the strings clients send and how to compare them.

A version travels as text in the ``MS-ASProtocolVersion`` header ("14.1") or as
one byte, version x 10, in a base64 query (141). Everything else in the package
compares versions as ``(major, minor)`` tuples, and an unknown version counts as
older than 14.0 (eas-protocol.md §4.3): the safe answer for an unknown client is
the HTTP-only one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["BASE64_VERSION_BYTES", "PROTOCOL_VERSIONS", "at_least", "version_tuple"]

PROTOCOL_VERSIONS: tuple[str, ...] = ("2.5", "12.0", "12.1", "14.0", "14.1", "16.0", "16.1")
"""Every version MS-ASHTTP defines, oldest first (the OPTIONS header order)."""

BASE64_VERSION_BYTES: Mapping[int, str] = {
    121: "12.1",
    140: "14.0",
    141: "14.1",
    160: "16.0",
    161: "16.1",
}
"""Byte 0 of a base64 query -> version; 2.5 and 12.0 never use that form."""

_VERSION_RE = re.compile(r"([0-9]{1,3})\.([0-9]{1,3})", re.ASCII)


def version_tuple(version: str | None) -> tuple[int, int] | None:
    """``"14.1" -> (14, 1)``; None when absent or not of the form major.minor."""
    if version is None:
        return None
    match = _VERSION_RE.fullmatch(version)
    if match is None:
        return None
    return int(match[1]), int(match[2])


def at_least(version: str | None, major: int, minor: int) -> bool:
    """Whether ``version`` is ``major.minor`` or newer; unknown versions are not."""
    parsed = version_tuple(version)
    return parsed is not None and parsed >= (major, minor)
