"""Settings of identity: realm checks and canonical routing keys (part of ``settings``).

Approach. ``settings`` builds and validates every section; the checks that
concern principals live here to keep that module readable. A realm's name
is lower-case letters, digits, dots and dashes (it is how principals are
written: safe in URLs and on a command line); a suffix is a domain name; a
NetBIOS name is 1-15 characters without dots, blanks or separators. Every
suffix or NetBIOS name names one realm, and the default realm exists. The
``routing.users`` keys are canonicalised by the one principal rule and the
``routing.domains`` keys mapped to their realm, when the file is read; two
keys naming one principal or realm are an error naming both key paths.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping

from sentry.model import canonical_principal

from .settings import IdentitySettings, RealmSettings, Settings, SettingsError, _join, _lower

__all__ = ["canonical_keys", "canonical_routing", "validate_identity", "validate_realm"]

_REALM_NAME = re.compile(r"[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?", re.ASCII)
_SUFFIX = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?\.?", re.ASCII)
_NETBIOS = re.compile(r"[A-Za-z0-9!#$%&'()^_{}~-]{1,15}", re.ASCII)


def validate_realm(r: RealmSettings, path: str) -> None:
    if not _REALM_NAME.fullmatch(r.name):
        raise SettingsError(
            f"{_join(path, 'name')}: {r.name!r} is not lower-case letters, digits, '.' and '-'"
        )
    for i, suffix in enumerate(r.suffixes):
        if not _SUFFIX.fullmatch(suffix):
            raise SettingsError(f"{_join(path, 'suffixes')}[{i}]: {suffix!r} is not a domain name")
    for i, name in enumerate(r.netbios):
        if not _NETBIOS.fullmatch(name):
            raise SettingsError(
                f"{_join(path, 'netbios')}[{i}]: {name!r} is not a NetBIOS domain name "
                "(1-15 characters, no dots, blanks, '\\', '/', ':' or '@')"
            )


def validate_identity(ident: IdentitySettings, path: str) -> None:
    """Realm names are unique, every suffix and NetBIOS name names one realm,
    and the default realm exists."""
    owners: dict[str, tuple[str, str]] = {}  # name -> (realm, key path)
    names: set[str] = set()
    for i, realm in enumerate(ident.realms):
        where = f"{_join(path, 'realms')}[{i}]"
        if realm.name in names:
            raise SettingsError(f"{where}.name: duplicate realm {realm.name!r}")
        names.add(realm.name)
        claims = [(f"{where}.name", realm.name)]
        claims += [(f"{where}.suffixes[{j}]", s) for j, s in enumerate(realm.suffixes)]
        claims += [(f"{where}.netbios[{j}]", n) for j, n in enumerate(realm.netbios)]
        for key_path, text in claims:
            held = owners.setdefault(_lower(text), (realm.name, key_path))
            if held[0] != realm.name:
                raise SettingsError(
                    f"{key_path}: {text!r} already names realm {held[0]!r} ({held[1]})"
                )
    if ident.default_realm is not None and ident.default_realm not in names:
        raise SettingsError(
            f"{_join(path, 'default_realm')}: no realm named {ident.default_realm!r}"
        )


def canonical_routing(s: Settings) -> Settings:
    """``routing.users`` keys as canonical principals, ``routing.domains`` keys
    as realms; two keys that name one principal or realm are an error."""
    realms = s.identity.to_realms()
    users = canonical_keys(
        s.routing.users, "routing.users", lambda k: canonical_principal(k, realms)
    )
    domains = canonical_keys(s.routing.domains, "routing.domains", realms.domain_key)
    routing = dataclasses.replace(s.routing, users=users, domains=domains)
    return dataclasses.replace(s, routing=routing)


def canonical_keys(
    table: Mapping[str, str], path: str, canonical: Callable[[str], str | None]
) -> dict[str, str]:
    out: dict[str, str] = {}
    seen: dict[str, str] = {}
    for key, value in table.items():
        name = canonical(key)
        if not name:
            raise SettingsError(f"{path}.{key}: names no principal")
        if name in seen:
            raise SettingsError(
                f"{path}.{key}: names {name!r}, as {path}.{seen[name]} does "
                "(one principal, one route)"
            )
        seen[name] = key
        out[name] = value
    return out
