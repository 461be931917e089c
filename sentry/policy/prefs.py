"""Preferences and where each value comes from: an administrator, the file, the default.

Approach. The configuration file may set any preference; an administrator may
set any through the API. An administrator's choice must survive restarts,
even when the value chosen equals the built-in default, and it must win over
the file only for the preferences the administrator actually set: an admin
who set only ``max_devices_per_mailbox`` still gets the file's
``refusal_style``. So the stored ``Preferences`` carry ``admin_set``, the
names an administrator set; at start ``effective`` takes those from the store
and every other one from the file (which is the built-in default where the
file is silent), and ``sources`` says which is which (the start log and
``GET /api/preferences`` show it). ``update_preferences`` is the API's write:
the given values become admin-set; ``use_file`` hands named preferences back
to the file. Names are the model's (``new_device_access_when_registry_unreachable``,
the file's ``new_device_access``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import fields, replace
from enum import StrEnum
from typing import Any

from sentry.model import NewDeviceAccess, Preferences, RefusalStyle
from sentry.settings import PreferenceSettings

from .changes import Changes
from .errors import ValidationError
from .registry import set_preferences
from .snapshot import Snapshot

__all__ = [
    "PREFERENCE_NAMES",
    "Source",
    "effective",
    "file_preferences",
    "sources",
    "update_preferences",
]

PREFERENCE_NAMES: tuple[str, ...] = tuple(
    f.name for f in fields(Preferences) if f.name != "admin_set"
)
"""Every preference, by its model (and API) name."""
_FILE_KEYS = {"new_device_access": "new_device_access_when_registry_unreachable"}


class Source(StrEnum):
    ADMIN = "admin"  # set through the admin API: wins over the file
    FILE = "file"  # the configuration file's value
    DEFAULT = "default"  # the built-in default (neither set it)


def file_preferences(p: PreferenceSettings) -> tuple[Preferences, frozenset[str]]:
    """The file's preferences (built-in defaults where it is silent) and the
    names the file actually gave."""
    prefs = Preferences(
        auto_block_unregistered=p.auto_block_unregistered,
        max_devices_per_mailbox=p.max_devices_per_mailbox,
        max_mailboxes_per_device=p.max_mailboxes_per_device,
        refusal_style=RefusalStyle(p.refusal_style),
        new_device_access_when_registry_unreachable=NewDeviceAccess(p.new_device_access),
        compliance_overrides_allow=p.compliance_overrides_allow,
    )
    return prefs, frozenset(_FILE_KEYS.get(k, k) for k in p.given)


def effective(stored: Preferences, file: Preferences) -> Preferences:
    """What applies: the stored value of each admin-set preference, else the file's."""
    values = {n: getattr(stored if n in stored.admin_set else file, n) for n in PREFERENCE_NAMES}
    return Preferences(**values, admin_set=stored.admin_set)


def sources(prefs: Preferences, given: Iterable[str]) -> dict[str, Source]:
    """Where each preference's value comes from (``given``: the names the file set)."""
    in_file = frozenset(given)

    def source(name: str) -> Source:
        if name in prefs.admin_set:
            return Source.ADMIN
        return Source.FILE if name in in_file else Source.DEFAULT

    return {name: source(name) for name in PREFERENCE_NAMES}


def update_preferences(
    snapshot: Snapshot,
    values: Mapping[str, Any],
    *,
    file: Preferences,
    use_file: Iterable[str] = (),
    actor: str,
    now: float,
    note: str = "",
) -> Changes:
    """An administrator's change: ``values`` are set (and become admin-set, even
    when equal to what applies now); the preferences named in ``use_file``
    take the file's value and stop being admin-set."""
    released = frozenset(use_file)
    unknown = sorted((values.keys() | released) - set(PREFERENCE_NAMES))
    if unknown:
        raise ValidationError(f"unknown preferences: {', '.join(unknown)}")
    both = sorted(values.keys() & released)
    if both:
        raise ValidationError(f"set and handed back to the file at once: {', '.join(both)}")
    old = snapshot.prefs
    admin_set = (old.admin_set | values.keys()) - released
    new = replace(old, **values, **{n: getattr(file, n) for n in released}, admin_set=admin_set)
    return set_preferences(snapshot, new, actor=actor, now=now, note=note, exact=True)
