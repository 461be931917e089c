"""Who a request is for (eas-protocol.md §6.1): one canonical user key.

Approach. The name a client authenticates with (``Authorization: Basic``)
wins over the free-form query ``User``, which is only a hint; a Bearer token
carries no name, so the query user is then the only one. Whatever the source,
``DOMAIN\\user`` (split at the last backslash), ``user@domain`` (UPN or SMTP,
split at the last ``@``) and ``user`` reduce to the same case-folded key, so
the association list has one row per mailbox however the client spells it.
The password in a Basic header is dropped the moment it is decoded.

``identity_from_name`` is public so that names typed by an administrator are
keyed by exactly the same rule.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

__all__ = ["Identity", "basic_user", "identity_from_name", "resolve_identity"]


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a request is for.

    ``key`` is the canonical principal used in association keys: the account
    name case-folded, without ``DOMAIN\\`` or ``@domain`` (so ``CORP\\JDoe``,
    ``jdoe@corp.example`` and ``jdoe`` are one user). ``domain`` is what the
    raw form carried (NetBIOS domain or UPN suffix, lower-cased) and ``raw`` the
    name exactly as sent, kept for logs. ``source`` says where it came from.
    """

    key: str
    raw: str
    domain: str | None = None
    source: str = "query"  # "authorization" | "query"


def resolve_identity(authorization: str | None, query_user: str | None) -> Identity | None:
    """The Basic-auth name when there is a usable one, else the query User."""
    basic = basic_user(authorization)
    if basic is not None:
        identity = identity_from_name(basic, "authorization")
        if identity is not None:
            return identity
    return None if query_user is None else identity_from_name(query_user, "query")


def basic_user(authorization: str | None) -> str | None:
    """The user name of an ``Authorization: Basic`` header; the password is dropped.

    Credentials are UTF-8 (phones) or ISO-8859-1 (Outlook). Another scheme
    (Bearer) or a malformed header yields None.
    """
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        raw = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        credentials = raw.decode("utf-8")
    except UnicodeDecodeError:
        credentials = raw.decode("iso-8859-1")
    name, colon, _ = credentials.partition(":")
    return name if colon else None


def identity_from_name(raw: str, source: str = "query") -> Identity | None:
    """``DOMAIN\\user``, ``user@domain`` or ``user`` -> an ``Identity``.

    The NetBIOS domain, when present, is the recorded domain; the UPN suffix is
    recorded otherwise. None when no account name is left (``"CORP\\"``, ``"@x"``).
    """
    name, domain = raw.strip(), None
    if "\\" in name:
        netbios, _, name = name.rpartition("\\")
        domain = netbios.strip().lower() or None
    if "@" in name:
        name, _, suffix = name.rpartition("@")
        domain = domain or suffix.strip().lower() or None
    key = name.strip().casefold()
    if not key:
        return None
    return Identity(key=key, raw=raw, domain=domain, source=source)
