"""Directory entries -> users: the attribute mapping of the LDAP sync (pure).

Approach. ``map_entries`` turns what an LDAP search returned (anything with
a ``dn``, a ``problem`` and ``values(attribute)``, e.g.
``sentry.directory.ldap.DirectoryEntry``) into ``Mapped`` values: the
``User`` the entry describes (``source: ldap``) or the problem that keeps it
out of this sync. It needs only the attribute mapping and the realms, so the
service runs it in the worker thread beside the search, off the event loop.

- The principal is the first value of the ``principal`` attribute through
  THE one rule (``canonical_principal`` under the realms). No value, or one
  that names no principal, is a problem: the entry is not used (a user
  already synced from it stays as it was, and is not taken as removed).
- The email is the first value of ``email`` when it is an address; an
  unusable one is dropped with a warning (the user is still synced).
- Aliases come from every value of the ``aliases`` attributes: a typed
  address (``SMTP:john@corp``, ``smtp:j.doe@corp``, as AD's proxyAddresses)
  counts for its ``smtp`` type only (X500, SIP and other types are not
  mailbox names); an untyped value is taken as it is. Each is canonicalised;
  one that names no principal is dropped with a warning.
- ``custom1..4`` and the display name are the first value, stripped (None
  when absent); a custom value longer than the API allows is a problem
  (pushed mailboxes read it: better the last good value than a cut one).

Each user's known names (``indexes.known_names``) are computed here too, so
the planning and the snapshot, on the event loop, find them memoised.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from sentry.model import Realms, User, UserSource, canonical_principal
from sentry.settings_directory import LdapAttributeSettings

from .indexes import known_names

__all__ = ["MAX_CUSTOM", "EntryLike", "Mapped", "map_entries", "map_entry"]

MAX_CUSTOM = 1024
"""The longest custom attribute value (the admin API's limit)."""
_MAX_DISPLAY = 256
_TYPED = re.compile(r"([A-Za-z][A-Za-z0-9]{0,15}):(.*)", re.DOTALL)


class EntryLike(Protocol):
    """What an LDAP search returns for one entry."""

    @property
    def dn(self) -> str: ...

    @property
    def problem(self) -> str | None: ...

    def values(self, name: str | None) -> tuple[str, ...]: ...


@dataclass(frozen=True, slots=True)
class Mapped:
    """One entry mapped: its DN, the principal when known, the user (None when
    ``problem`` keeps it out) and what was dropped from it (``warnings``)."""

    dn: str
    principal: str | None
    user: User | None
    problem: str | None = None
    warnings: tuple[str, ...] = ()


def map_entries(
    entries: Iterable[EntryLike], attrs: LdapAttributeSettings, realms: Realms
) -> list[Mapped]:
    """Every entry mapped, sorted by DN (the order conflicts are decided in)."""
    return sorted((map_entry(e, attrs, realms) for e in entries), key=lambda m: m.dn)


def map_entry(entry: EntryLike, attrs: LdapAttributeSettings, realms: Realms) -> Mapped:
    """One entry as a user, or the problem that keeps it out (module comment)."""
    if entry.problem is not None:
        return Mapped(entry.dn, None, None, entry.problem)
    raw = _first(entry.values(attrs.principal))
    if raw is None:
        return Mapped(entry.dn, None, None, f"no {attrs.principal}: no principal")
    principal = canonical_principal(raw, realms)
    if principal is None:
        return Mapped(entry.dn, None, None, f"{attrs.principal} {raw[:80]!r} names no principal")
    warnings: list[str] = []
    customs: dict[str, str | None] = {}
    for i in range(1, 5):
        name = getattr(attrs, f"custom{i}")
        value = _first(entry.values(name))
        if value is not None and len(value) > MAX_CUSTOM:
            problem = f"{name} (custom{i}) is longer than {MAX_CUSTOM} characters"
            return Mapped(entry.dn, principal, None, problem)
        customs[f"custom{i}"] = value
    user = User(
        principal,
        email=_email(entry.values(attrs.email), realms, warnings),
        display_name=(_first(entry.values(attrs.display_name)) or "")[:_MAX_DISPLAY],
        source=UserSource.LDAP,
        custom1=customs["custom1"],
        custom2=customs["custom2"],
        custom3=customs["custom3"],
        custom4=customs["custom4"],
        aliases=_aliases(entry, attrs, realms, principal, warnings),
    )
    known_names(user, realms)  # computed here, in the worker thread; the snapshot reuses it
    return Mapped(entry.dn, principal, user, None, tuple(warnings))


def _first(values: tuple[str, ...]) -> str | None:
    for value in values:
        text = value.strip()
        if text:
            return text
    return None


def _email(values: tuple[str, ...], realms: Realms, warnings: list[str]) -> str:
    text = _first(values)
    if text is None:
        return ""
    if "@" not in text or canonical_principal(text, realms) is None:
        warnings.append(f"email {text[:80]!r} is not an address: dropped")
        return ""
    return text


def _aliases(
    entry: EntryLike,
    attrs: LdapAttributeSettings,
    realms: Realms,
    principal: str,
    warnings: list[str],
) -> frozenset[str]:
    out: set[str] = set()
    for name in attrs.aliases:
        for value in entry.values(name):
            text = _address(value)
            if text is None:
                continue
            alias = canonical_principal(text, realms)
            if alias is None:
                warnings.append(f"{name} value {text[:80]!r} names no principal: dropped")
            elif alias != principal:
                out.add(alias)
    return frozenset(out)


def _address(value: str) -> str | None:
    """The mailbox name of an alias value: ``smtp:``-typed or untyped; None otherwise."""
    text = value.strip()
    typed = _TYPED.fullmatch(text)
    if typed is not None:
        kind, rest = typed.group(1).lower(), typed.group(2).strip()
        return rest or None if kind == "smtp" else None
    return text or None
