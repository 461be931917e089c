"""The one ``Authorization`` of a request, read once (eas-protocol.md §1.4, §6.1).

Approach. A request carries at most one ``Authorization`` header. Two are
refused (400): the gateway and the backend could each pick a different one
(the gateway used to key its decision on the last, a backend authenticates the
first), which let a blocked mailbox through under another mailbox's name.
``read_authorization`` turns the header values into one frozen
``Authorization``: the scheme, the exact header value (what the backend sees,
unchanged), the Basic user name (the password is dropped here) or the Bearer
token. Neither the header value nor the token appears in ``repr``.

``check_query_user`` enforces that a query ``User`` (plain form, or tag 8 of
the base64 form) names the same principal as the credentials. Both names go
through the one principal rule (``principal``: ``canonical_principal`` under
the configured realms) and, when the caller passes the directory's alias
resolution, through the user's known names; their keys are compared, so
``CORP\\john`` in the query and ``john@corp.example`` in the credentials agree
when the realms say they are one principal, and ``User=shared`` with
alice's password does not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from sentry.model import NO_REALMS, Realms

from .errors import RequestError
from .identity import Identity, basic_user, identity_of
from .status import CommonStatus

__all__ = [
    "Authorization",
    "DuplicateAuthorization",
    "MalformedAuthorization",
    "Scheme",
    "UserMismatch",
    "basic_identity",
    "check_query_user",
    "principal",
    "read_authorization",
]

MAX_TOKEN = 16 * 1024
"""Longest Bearer token accepted (Entra ID access tokens are 1-4 KiB)."""


class Scheme(StrEnum):
    """The authentication scheme of a request (a bounded metric label)."""

    NONE = "none"
    BASIC = "basic"
    BEARER = "bearer"
    OTHER = "other"  # NTLM, Negotiate, Digest...: not accepted by the gateway


@dataclass(frozen=True, slots=True)
class Authorization:
    """What the request's single ``Authorization`` header says."""

    scheme: Scheme
    header: str | None = field(default=None, repr=False)  # exactly as received
    user: str | None = None  # Basic: the user name as sent
    token: str | None = field(default=None, repr=False)  # Bearer: the token


class DuplicateAuthorization(RequestError):
    """More than one ``Authorization`` header."""

    eas_status = CommonStatus.InvalidContent


class MalformedAuthorization(RequestError):
    """A Basic header that is not base64 of ``user:password`` naming a user, or
    a Bearer header without a single token."""

    eas_status = CommonStatus.InvalidContent


class UserMismatch(RequestError):
    """The query ``User`` names another principal than the credentials."""

    eas_status = CommonStatus.AccessDenied


def principal(name: str, source: str, realms: Realms = NO_REALMS) -> Identity | None:
    """The identity ``name`` is, by the one principal rule under ``realms``
    (None: names no one).

    Every name this module and the proxy's identity step compare (Basic user,
    token claim, query User) goes through here, so they agree with the keys of
    the association list."""
    return identity_of(name, source, realms)


def read_authorization(values: Sequence[str], realms: Realms = NO_REALMS) -> Authorization:
    """The request's ``Authorization`` from all its header values.

    Raises ``DuplicateAuthorization`` for more than one value and
    ``MalformedAuthorization`` for a Basic or Bearer value that cannot be used.
    """
    if not values:
        return Authorization(Scheme.NONE)
    if len(values) > 1:
        raise DuplicateAuthorization(
            f"{len(values)} Authorization headers: a request carries exactly one"
        )
    header = values[0]
    scheme, _, rest = header.strip().partition(" ")
    match scheme.lower():
        case "basic":
            name = basic_user(header)
            if name is None or principal(name, "authorization", realms) is None:
                raise MalformedAuthorization(
                    "Authorization: Basic is not base64 of user:password naming a user"
                )
            return Authorization(Scheme.BASIC, header=header, user=name)
        case "bearer":
            token = rest.strip()
            if not token or len(token) > MAX_TOKEN or any(c.isspace() for c in token):
                raise MalformedAuthorization("Authorization: Bearer needs exactly one token")
            return Authorization(Scheme.BEARER, header=header, token=token)
        case _:
            return Authorization(Scheme.OTHER, header=header)


def basic_identity(auth: Authorization, realms: Realms = NO_REALMS) -> Identity:
    """The identity named by Basic credentials (``read_authorization`` checked it)."""
    assert auth.scheme is Scheme.BASIC and auth.user is not None
    identity = principal(auth.user, "authorization", realms)
    if identity is None:  # pragma: no cover - read_authorization refuses these
        raise MalformedAuthorization("Authorization: Basic names no user")
    return identity


def check_query_user(
    identity: Identity,
    query_user: str | None,
    realms: Realms = NO_REALMS,
    resolve: Callable[[str], str] | None = None,
) -> None:
    """``UserMismatch`` when ``query_user`` names another principal than
    ``identity``; ``resolve`` maps a key to the user it is a known name of."""
    if query_user is None:
        return
    named = principal(query_user, "query", realms)
    same = resolve or _itself
    if named is None or same(named.key) != same(identity.key):
        raise UserMismatch(
            "the query User names another principal than the Authorization credentials"
        )


def _itself(key: str) -> str:
    return key
