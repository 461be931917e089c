"""Who a mailbox principal is: realms and THE one canonicalisation rule (L0, stdlib only).

Approach. A client, an administrator, a routing table or an Exchange setting
may name one mailbox as ``CORP\\john``, ``john@corp.example.com``,
``JOHN`` or ``john@example.com``. Whether those are one principal is not a
fact of the text but of the directory: the configuration says which UPN/SMTP
suffixes and NetBIOS names belong to one *realm*, and which realm a bare
name is in. ``canonical_principal(raw, realms)`` is the only function that
decides it; everything that keys, routes, filters or stores a principal calls
it (the request parser, the admin API and CLI, routing keys, pushed
mailboxes, the store's re-keying).

The canonical string (case-folded; what keys associations and what the admin
list shows) is one of:

- ``local@realm``: the name is in a configured realm (its NetBIOS name or a
  suffix matched, or it is bare and ``default`` names the realm), or its
  UPN/SMTP suffix is unknown: an unknown suffix is its own realm, written as
  sent (``john@gmail.example``);
- ``netbios\\local``: an unknown NetBIOS domain, its own realm too (never the
  same as an unknown suffix of the same spelling: ``CORP\\john`` and
  ``john@corp`` are two principals unless a realm says otherwise);
- ``local``: a bare name when no default realm is configured.

A canonical string canonicalises to itself (under the same realms), a realm's
``name`` counts as one of its suffixes, and a name that carries a NetBIOS
domain and a suffix of two different realms names no principal (None), as
does an empty, over-long or non-printable name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "MAX_PRINCIPAL_LENGTH",
    "NO_REALMS",
    "Realm",
    "Realms",
    "canonical_principal",
    "principal_domain",
]

MAX_PRINCIPAL_LENGTH = 320
"""Longest raw name accepted (an SMTP address is at most 254 characters)."""


@dataclass(frozen=True, slots=True)
class Realm:
    """One directory realm: its name (how its principals are written), its
    UPN/SMTP suffixes and its NetBIOS domain names (any case)."""

    name: str
    suffixes: frozenset[str] = frozenset()
    netbios: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Realms:
    """The configured realms and the realm of bare names (``default``).

    ``ValueError`` when a suffix or NetBIOS name belongs to two realms, or
    ``default`` names no realm (settings checks these first, with key paths).
    """

    realms: tuple[Realm, ...] = ()
    default: str | None = None
    _suffix: Mapping[str, str] = field(init=False, repr=False, compare=False)
    _netbios: Mapping[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        suffix: dict[str, str] = {}
        netbios: dict[str, str] = {}
        for realm in self.realms:
            for name in {realm.name, *realm.suffixes}:
                _claim(suffix, _domain(name), realm.name, "suffix")
            for name in realm.netbios:
                _claim(netbios, name.strip().casefold(), realm.name, "NetBIOS name")
        if self.default is not None and self.default not in {r.name for r in self.realms}:
            raise ValueError(f"default realm {self.default!r} is not a configured realm")
        object.__setattr__(self, "_suffix", suffix)
        object.__setattr__(self, "_netbios", netbios)

    def by_suffix(self, suffix: str) -> str | None:
        """The realm of a UPN/SMTP suffix (case-folded), or None when unknown."""
        return self._suffix.get(suffix)

    def by_netbios(self, netbios: str) -> str | None:
        """The realm of a NetBIOS domain name (case-folded), or None when unknown."""
        return self._netbios.get(netbios)

    def domain_key(self, domain: str) -> str:
        """The routing key of a domain: its realm's name when a realm claims it
        (suffix, NetBIOS name or the realm's own name), else the domain itself
        case-folded (an unknown domain is its own realm)."""
        realm = self._suffix.get(domain)  # the usual case: already normal (no string work)
        if realm is not None:
            return realm
        d = _domain(domain)
        return self._suffix.get(d) or self._netbios.get(d) or d


def _claim(index: dict[str, str], name: str, realm: str, what: str) -> None:
    holder = index.setdefault(name, realm)
    if holder != realm:
        raise ValueError(f"{what} {name!r} belongs to realms {holder!r} and {realm!r}")


def _domain(text: str) -> str:
    return text.strip().casefold().rstrip(".").rstrip()


NO_REALMS = Realms()
"""No realm configured: bare names stay bare, a domain-qualified name is its own principal."""


def canonical_principal(raw: str, realms: Realms = NO_REALMS) -> str | None:
    """The canonical principal of ``raw`` under ``realms`` (see the module comment).

    ``DOMAIN\\user`` splits at the last backslash, ``user@suffix`` at the last
    ``@``; surrounding blanks are ignored and an empty domain counts as none.
    None when no principal is named.
    """
    text = raw.strip()
    if not text or len(text) > MAX_PRINCIPAL_LENGTH or not text.isprintable():
        return None
    netbios, _, text = text.rpartition("\\")
    text, at, suffix = text.rpartition("@") if "@" in text else ("", "", text)
    local = (text if at else suffix).strip().casefold()
    netbios, domain = netbios.strip().casefold(), _domain(suffix) if at else ""
    if not local or "\\" in netbios or "@" in netbios or ("@" in local and not domain):
        return None  # (an "@" in the name needs a domain after it to stay one name)
    if any(c.isspace() for c in domain):
        return None  # not a domain name
    where = _realm(netbios, domain, realms)
    if where is None:
        return None
    kind, name = where
    if kind == "netbios":
        return f"{name}\\{local}"
    return f"{local}@{name}" if name else local


def _realm(netbios: str, suffix: str, realms: Realms) -> tuple[str, str] | None:
    """Where the name lives: ``("realm", name)`` (written ``local@name``; an
    unknown suffix is its own realm), ``("netbios", name)`` (an unknown NetBIOS
    domain, written ``name\\local``), ``("realm", "")`` (bare), or None when
    the NetBIOS domain and the suffix name two different realms."""
    by_netbios: tuple[str, str] | None = None
    if netbios:
        known = realms.by_netbios(netbios)
        by_netbios = ("realm", known) if known else ("netbios", netbios)
    by_suffix = ("realm", realms.by_suffix(suffix) or suffix) if suffix else None
    if by_netbios is not None and by_suffix is not None:
        return by_netbios if by_netbios == by_suffix else None
    return by_netbios or by_suffix or ("realm", realms.default or "")


def principal_domain(principal: str) -> str | None:
    """The realm (routing domain) of a canonical principal: what follows its
    last ``@``, or its unknown NetBIOS domain; None for a bare name."""
    if "\\" in principal:
        return principal.rpartition("\\")[0]
    _, at, domain = principal.rpartition("@")
    return domain if at else None
