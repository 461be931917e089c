"""Settings of the directory sync (``directory.ldap``; part of ``settings``).

Approach. The sections are frozen dataclasses like every other section;
``settings`` builds them and calls ``ldap_problems`` for the checks types
cannot express, turning each ``(key path, problem)`` into a
``SettingsError``. This module imports nothing from ``settings`` so that the
two cannot form a cycle.

The bind password is never in the YAML: ``bind_password_file`` names a file
(read at every sync, so a rotated password needs no restart; refused when
others may read it). A server is verified by default (``tls_verify``); a
plaintext connection (``ldap://`` without ``start_tls``) is allowed only to
a loopback host or a unix socket (``ldapi://``), where the password does not
cross a network.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

__all__ = [
    "DirectorySettings",
    "LdapAttributeSettings",
    "LdapSettings",
    "RemovalAction",
    "ldap_problems",
    "ldap_target",
]

RemovalAction = Literal["keep", "mark", "block", "delete"]


@dataclass(frozen=True)
class LdapAttributeSettings:
    """Which LDAP attribute gives each user field (None: not mapped)."""

    principal: str = "userPrincipalName"
    email: str | None = "mail"
    display_name: str | None = "displayName"
    aliases: tuple[str, ...] = ("proxyAddresses",)
    custom1: str | None = None
    custom2: str | None = None
    custom3: str | None = None
    custom4: str | None = None

    def requested(self) -> list[str]:
        """Every attribute a search asks for, once, in a stable order."""
        names = [self.principal, self.email, self.display_name, *self.aliases]
        names += [self.custom1, self.custom2, self.custom3, self.custom4]
        return list(dict.fromkeys(n for n in names if n))


@dataclass(frozen=True)
class LdapSettings:
    """One LDAP directory the users are synced from (README "Directory sync")."""

    urls: tuple[str, ...]
    bind_dn: str
    bind_password_file: str
    base_dn: str
    filter: str = "(objectClass=person)"
    scope: Literal["subtree", "one"] = "subtree"
    start_tls: bool = False
    ca_file: str | None = None
    tls_verify: bool = True
    page_size: int = 500
    connect_timeout_seconds: float = 5.0
    timeout_seconds: float = 30.0
    sync_interval_seconds: float = 900.0  # 0: only when asked (API, CLI)
    retry_seconds: float = 60.0  # after a failed sync, the next try (at most the interval)
    removed_users: RemovalAction = "mark"
    max_removed_percent: float = 10.0  # a sync that would remove more is refused
    attributes: LdapAttributeSettings = LdapAttributeSettings()


@dataclass(frozen=True)
class DirectorySettings:
    """Where directory users come from besides the admin API (None: nowhere)."""

    ldap: LdapSettings | None = None


_SCHEMES = ("ldap", "ldaps", "ldapi")
_ATTRIBUTE = re.compile(r"[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)+", re.ASCII)
_LOOPBACK = frozenset({"localhost"})


def ldap_target(url: str) -> tuple[str, str, int | None]:
    """``(scheme, host or socket path, port)`` of an LDAP URL (no validation)."""
    parts = urlsplit(url)
    if parts.scheme.lower() == "ldapi":
        return "ldapi", unquote(parts.netloc) or unquote(parts.path), None
    return parts.scheme.lower(), parts.hostname or "", parts.port


def _loopback(host: str) -> bool:
    if host in _LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_problem(url: str, start_tls: bool) -> str | None:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        return f"not an LDAP URL (ldap://, ldaps://, ldapi://): {url!r}"
    if parts.username or parts.password or parts.query or parts.fragment:
        return "give only scheme://host[:port] (the bind DN and password have keys of their own)"
    if parts.path not in ("", "/") and scheme != "ldapi":
        return "no path: the search base is base_dn"
    _, host, _ = ldap_target(url)
    if not host:
        return f"no host: {url!r}"
    if scheme == "ldap" and not start_tls and not _loopback(host):
        return (
            "plaintext LDAP would send the bind password over the network: use ldaps:// "
            "or start_tls: true (plaintext only to a loopback host or ldapi://)"
        )
    if scheme == "ldaps" and start_tls:
        return "ldaps:// is TLS already: start_tls is for ldap:// URLs"
    return None


def ldap_problems(s: LdapSettings, path: str) -> list[tuple[str, str]]:
    """What is wrong with ``s`` (``(key path, problem)``; empty: nothing)."""
    out: list[tuple[str, str]] = []
    if not s.urls:
        out.append((f"{path}.urls", "at least one URL is required"))
    for i, url in enumerate(s.urls):
        problem = _url_problem(url, s.start_tls)
        if problem is not None:
            out.append((f"{path}.urls[{i}]", problem))
    if not s.filter.strip().startswith("(") or not s.filter.strip().endswith(")"):
        out.append((f"{path}.filter", "an LDAP filter is written in parentheses"))
    if not 1 <= s.page_size <= 10_000:
        out.append((f"{path}.page_size", "must be 1-10000"))
    for key in ("connect_timeout_seconds", "timeout_seconds", "retry_seconds"):
        if getattr(s, key) <= 0:
            out.append((f"{path}.{key}", "must be > 0"))
    if s.sync_interval_seconds < 0 or 0 < s.sync_interval_seconds < 10:
        out.append((f"{path}.sync_interval_seconds", "must be 0 (only on demand) or ≥ 10"))
    if not 0 <= s.max_removed_percent <= 100:
        out.append((f"{path}.max_removed_percent", "must be 0-100"))
    attrs = s.attributes
    names = [("principal", attrs.principal), ("email", attrs.email)]
    names += [("display_name", attrs.display_name)]
    names += [(f"aliases[{i}]", a) for i, a in enumerate(attrs.aliases)]
    names += [(f"custom{i}", getattr(attrs, f"custom{i}")) for i in range(1, 5)]
    for key, name in names:
        if name is not None and not _ATTRIBUTE.fullmatch(name):
            out.append((f"{path}.attributes.{key}", f"{name!r} is not an attribute name"))
    return out
