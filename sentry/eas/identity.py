"""Who a request is for (eas-protocol.md §6.1): one canonical principal.

Approach. The name a client authenticates with (``Authorization: Basic``)
wins over the free-form query ``User``, which is only a hint; a Bearer token
carries no name, so the query user is then the only one. Whatever the source,
the name is reduced by THE one rule, ``sentry.model.canonical_principal``,
under the configured realms: ``CORP\\john``, ``john@corp.example.com`` and a
bare ``john`` are one principal exactly when the realms say so, so the
association list has one row per mailbox however the client spells it, and
two mailboxes of two realms are never one row. The password in a Basic
header is dropped the moment it is decoded.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from sentry.model import NO_REALMS, Realms, canonical_principal, principal_domain

__all__ = ["Identity", "basic_user", "identity_of", "resolve_identity"]


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a request is for.

    ``key`` is the canonical principal (``canonical_principal``) used in
    association keys; ``domain`` its realm (``principal_domain``: the routing
    domain, None for a bare name); ``raw`` the name exactly as sent, kept for
    logs. ``source`` says where it came from.
    """

    key: str
    raw: str
    domain: str | None = None
    source: str = "query"  # "authorization" | "query"


def resolve_identity(
    authorization: str | None, query_user: str | None, realms: Realms = NO_REALMS
) -> Identity | None:
    """The Basic-auth name when a Basic header carries one, else the query User.

    A Basic name that names no principal gives None (the request is refused as
    malformed), never the query User: the decision must not be keyed on
    another name than the one the backend authenticates.
    """
    basic = basic_user(authorization)
    if basic is not None:
        return identity_of(basic, "authorization", realms)
    return None if query_user is None else identity_of(query_user, "query", realms)


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


def identity_of(raw: str, source: str, realms: Realms = NO_REALMS) -> Identity | None:
    """The ``Identity`` a name stands for: its key is ``canonical_principal(raw,
    realms)`` (the one rule; this only wraps it); None when it names no one.

    An identity is immutable and a function of (name, source, realms), so the
    ones made are remembered (a request asks for its name's several times) for
    the realms they were made under; the memory is emptied when full."""
    known = _KNOWN.get((raw, source))
    if known is not None and known[0] is realms:
        return known[1]
    key = canonical_principal(raw, realms)
    identity = (
        None
        if key is None
        else Identity(key=key, raw=raw, domain=principal_domain(key), source=source)
    )
    if len(_KNOWN) >= KNOWN_IDENTITIES:
        _KNOWN.clear()
    _KNOWN[(raw, source)] = (realms, identity)
    return identity


KNOWN_IDENTITIES = 4096
_KNOWN: dict[tuple[str, str], tuple[Realms, Identity | None]] = {}
