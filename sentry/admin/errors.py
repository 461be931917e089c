"""The admin API's exception tree; each class carries its HTTP status.

Handlers raise these (or let the policy's ``AdminError`` through); the error
middleware in ``api.py`` is the one place that turns either into a JSON answer
``{"error": "...", "fields": {...}}``. Constructors only store fields.

    ApiError                        an admin request was not carried out   (500)
    ├── BadRequest                  malformed JSON, bad field values        (400)
    ├── Unauthorized                no or wrong bearer token                (401)
    ├── Forbidden                   a change asked with the read-only token (403)
    ├── NotFound                    no such association / user / device     (404)
    ├── Conflict                    not allowed in the current state        (409)
    ├── BadGateway                  the directory could not be read         (502)
    └── Unavailable                 the state store cannot keep changes     (503)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sentry.policy import NotFoundError, PolicyError, PushConflictError, TransitionError

__all__ = [
    "ApiError",
    "BadGateway",
    "BadRequest",
    "Conflict",
    "Forbidden",
    "NotFound",
    "Unauthorized",
    "Unavailable",
    "from_policy",
]


class ApiError(Exception):
    """Base class: ``status`` is the HTTP answer, ``fields`` the per-field messages."""

    status: int = 500

    def __init__(
        self,
        message: str,
        fields: Mapping[str, str] | None = None,
        problems: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.fields = dict(fields or {})
        self.problems = [dict(p) for p in problems]

    def body(self) -> dict[str, Any]:
        """The JSON body of the answer."""
        out: dict[str, Any] = {"error": self.message}
        if self.fields:
            out["fields"] = self.fields
        if self.problems:
            out["problems"] = self.problems
        return out


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class BadGateway(ApiError):
    """A system the request needed answered wrongly or not at all; ``kind`` says how."""

    status = 502

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind

    def body(self) -> dict[str, Any]:
        return {**super().body(), "kind": self.kind}


class Unavailable(ApiError):
    """The store cannot keep changes now: ``retry_after`` seconds is when the
    gateway checks it again (the ``Retry-After`` header)."""

    status = 503

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)


def from_policy(exc: PolicyError) -> ApiError:
    """The API error for a policy exception (its ``http_status`` decides)."""
    if isinstance(exc, PushConflictError):
        return Conflict(exc.message, problems=[p.view() for p in exc.problems])
    if isinstance(exc, TransitionError):
        return Conflict(exc.message)
    if isinstance(exc, NotFoundError):
        return NotFound(exc.message)
    if exc.http_status == 409:
        return Conflict(exc.message)
    if exc.http_status == 400:
        return BadRequest(exc.message)
    return ApiError(exc.message)
