"""``sentry admin store show|recover``: the state store's health, and the recovery
of a database file deleted or replaced under the running gateway."""

from __future__ import annotations

import argparse
from typing import Any

from .cli_base import Builder, Render, add_note, get_command, with_note
from .cli_client import AdminTarget
from .cli_format import record

__all__ = ["add_store_commands"]


def add_store_commands(b: Builder) -> None:
    """Register ``store show`` and ``store recover``."""
    subs = b.group("store", "the state store: health and recovery")
    b.leaf(subs, "show", "healthy, or the fault and what to do", get_command("/api/store", record))
    p = b.leaf(
        subs, "recover", "write the state back to store.path (deleted/replaced file)", _recover
    )
    add_note(p)


def _recover(t: AdminTarget, args: argparse.Namespace) -> tuple[Any, Render]:
    return t.call("POST", "/api/store/recover", with_note(args, {})), record
