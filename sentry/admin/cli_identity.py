"""``sentry admin`` commands for devices' established backend types.

``backend-types`` lists them; ``reset-backend-type DEVICEID`` resets the type
of an unregistered EAS DeviceId and ``devices reset-backend-type ID`` that of
a managed device (all its DeviceIds). A reset needs ``--note``; without
``--backend-type`` the device goes back to the type of its oldest verified
association. Both are one audited API call each (``admin/backend_types.py``).

    sentry admin backend-types
    sentry admin devices reset-backend-type alice-phone --backend-type gmail --note "moved"
"""

from __future__ import annotations

import argparse
from typing import Any

from .cli_base import Builder, Command, Render, add_note, quote_path, with_note
from .cli_client import AdminTarget
from .cli_format import table

__all__ = ["add_backend_type_commands", "add_device_reset", "established_text"]

_COLUMNS = (
    ("SCOPE", lambda e: e["scope"]),
    ("TYPE", lambda e: e["backend_type"]),
    ("SET BY", lambda e: _set_by(e)),
    ("AT", lambda e: e["at"]),
    ("NOTE", lambda e: e["note"]),
)


def add_backend_type_commands(b: Builder) -> None:
    """``backend-types`` and ``reset-backend-type`` (unregistered DeviceIds)."""
    b.leaf(b.top, "backend-types", "established backend types of devices", _list)
    p = b.leaf(
        b.top,
        "reset-backend-type",
        "reset an unregistered EAS DeviceId's established backend type",
        _reset("/api/device-ids", "device_id"),
    )
    p.add_argument("device_id", help="the EAS DeviceId")
    _reset_args(p)


def add_device_reset(b: Builder, devices: Any) -> None:
    """``devices reset-backend-type ID`` (a managed device, all its DeviceIds)."""
    p = b.leaf(
        devices,
        "reset-backend-type",
        "reset a managed device's established backend type",
        _reset("/api/devices", "id"),
    )
    p.add_argument("id", help="the managed device id")
    _reset_args(p)


def _reset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend-type", help="set this type (default: the oldest verified mailbox's)")
    add_note(p, required=True)


def _set_by(e: Any) -> str:
    key = e.get("set_by")
    return f"{key['device_id']}/{key['user']}" if key else (e.get("actor") or "-")


def _list(t: AdminTarget, args: argparse.Namespace) -> tuple[Any, Render]:
    answer = t.call("GET", "/api/backend-types")
    return answer, lambda a: table(a["items"], _COLUMNS)


def _reset(base: str, attribute: str) -> Command:
    def run(t: AdminTarget, args: argparse.Namespace) -> tuple[Any, Render]:
        body: dict[str, Any] = {}
        if args.backend_type is not None:
            body["backend_type"] = args.backend_type
        path = f"{base}/{quote_path(getattr(args, attribute))}/reset-backend-type"
        return t.call("POST", path, with_note(args, body)), established_text

    return run


def established_text(answer: Any) -> str:
    """``device:x: exchange (set by D/u); held polls ended: n``."""
    e = answer["established"]
    now = "no type (the next accepted mailbox sets it)" if e is None else e["backend_type"]
    return f"{answer['scope']}: {now}; held polls ended: {answer['polls_ended']}"
