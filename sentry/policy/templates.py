"""Pushed mailboxes: Exchange settings -> labels -> devices, templates resolved.

Approach (design.md §3, the seed's push method). A device carries a label when
the device lists it or the label lists the device. Every Exchange setting
applied by those labels is resolved, in priority order (EPMM's Exchange App
Priority: the lower number first, then the name), against the device owner's
attributes: ``$USERID$`` (the owner's principal), ``$EMAIL$`` and
``$USER_CUSTOM1$``..``$USER_CUSTOM4$``. A variable that is unknown or has no
value is an *error value* reported for the device, never an empty string that
would silently push a wrong account. An Android device holds at most two
Exchange accounts, and the owner's own account is one of them: a setting that
resolves to the owner is that account; every other setting takes the one
remaining slot in priority order, and each further one is an error naming the
setting (listed in ``capped``).

The result's ``principals`` are the canonical mailbox keys the device is
entitled to besides its owner's: each resolved user name goes through the
``canonical`` function the caller passes (the snapshot's: the one principal
rule under the configured realms, then the alias index).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from sentry.model import Device, ExchangeSetting, Label, Platform, User, canonical_principal

__all__ = [
    "ANDROID_MAX_SETTINGS",
    "PushedMailbox",
    "PushedMailboxes",
    "applied_settings",
    "resolve_pushed_mailboxes",
    "resolve_template",
]

ANDROID_MAX_SETTINGS = 2
"""Exchange accounts an Android device holds, the owner's own included."""
_VARIABLE = re.compile(r"\$([A-Za-z0-9_]+)\$")


@dataclass(frozen=True, slots=True)
class PushedMailbox:
    """One Exchange setting resolved for one device."""

    setting: str
    user_name: str
    email: str
    principal: str


@dataclass(frozen=True, slots=True)
class PushedMailboxes:
    """What a device is pushed, and what could not be pushed (with why)."""

    mailboxes: tuple[PushedMailbox, ...] = ()
    errors: tuple[str, ...] = ()
    principals: frozenset[str] = frozenset()  # canonical principals of ``mailboxes``
    capped: tuple[str, ...] = ()  # settings an Android device had no slot for


class _Unresolved(Exception):
    """A template named a variable with no value (internal; becomes an error text)."""


def resolve_template(template: str, owner: User) -> str:
    """Substitute the ``$VARIABLE$``s of ``template`` from ``owner``.

    Raises ``ValueError`` naming the first variable that is unknown or empty.
    """
    try:
        return _VARIABLE.sub(lambda m: _value(m.group(1), owner), template)
    except _Unresolved as exc:
        raise ValueError(str(exc)) from None


def _value(name: str, owner: User) -> str:
    values = {
        "USERID": owner.principal,
        "EMAIL": owner.email,
        "USER_CUSTOM1": owner.custom1,
        "USER_CUSTOM2": owner.custom2,
        "USER_CUSTOM3": owner.custom3,
        "USER_CUSTOM4": owner.custom4,
    }
    if name.upper() not in values:
        raise _Unresolved(f"${name}$ is not a known variable")
    value = values[name.upper()]
    if not value:
        raise _Unresolved(f"${name}$ has no value for user {owner.principal!r}")
    return value


def resolve_pushed_mailboxes(
    device: Device,
    owner: User | None,
    labels: Iterable[Label],
    settings: Mapping[str, ExchangeSetting],
    canonical: Callable[[str], str | None] = canonical_principal,
) -> PushedMailboxes:
    """The mailboxes pushed to ``device`` by the labels it carries.

    ``labels`` may be all labels: only those carried by the device count.
    ``canonical`` maps a resolved user name to its principal (None: no account).
    """
    mailboxes: list[PushedMailbox] = []
    errors: list[str] = []
    capped: list[str] = []
    slots = ANDROID_MAX_SETTINGS - 1 if device.platform is Platform.ANDROID else None
    for name in applied_settings(device, labels, settings):
        setting = settings.get(name)
        if setting is None:
            errors.append(f"Exchange setting {name!r}: no such setting")
            continue
        pushed = _resolve_one(setting, owner, errors, canonical)
        if owner is not None and pushed is not None and pushed.principal == owner.principal:
            mailboxes.append(pushed)  # the owner's own account: it has its slot
        elif slots is not None and slots <= 0:
            capped.append(name)
            errors.append(_android_error(name))
        else:
            slots = None if slots is None else slots - 1
            if pushed is not None:
                mailboxes.append(pushed)
    principals = frozenset(m.principal for m in mailboxes)
    return PushedMailboxes(tuple(mailboxes), tuple(errors), principals, tuple(capped))


def applied_settings(
    device: Device, labels: Iterable[Label], settings: Mapping[str, ExchangeSetting]
) -> list[str]:
    """The names of the settings the device's labels apply, in priority order
    (unknown names last, by name)."""
    carried = [lb for lb in labels if lb.name in device.labels or device.id in lb.devices]
    names = {name for lb in carried for name in lb.settings}
    return sorted(names, key=lambda n: _rank(settings.get(n), n))


def _rank(setting: ExchangeSetting | None, name: str) -> tuple[int, int, str]:
    return (0, setting.priority, name) if setting is not None else (1, 0, name)


def _android_error(name: str) -> str:
    return (
        f"Exchange setting {name!r}: not applied, an Android device takes at most "
        f"{ANDROID_MAX_SETTINGS} Exchange accounts (its owner's included)"
    )


def _resolve_one(
    setting: ExchangeSetting,
    owner: User | None,
    errors: list[str],
    canonical: Callable[[str], str | None],
) -> PushedMailbox | None:
    where = f"Exchange setting {setting.name!r}"
    if owner is None:
        errors.append(f"{where}: the device owner is not a registered user")
        return None
    try:
        user_name = resolve_template(setting.user_name, owner)
        email = resolve_template(setting.email, owner)
    except ValueError as exc:
        errors.append(f"{where}: {exc}")
        return None
    principal = canonical(user_name)
    if not principal:
        errors.append(f"{where}: user name {user_name!r} names no account")
        return None
    return PushedMailbox(setting.name, user_name, email, principal)
