"""The exception tree of the policy package.

A refusal is never an exception (it is a ``Refuse`` decision). Exceptions are
for operations that cannot be carried out: an admin action the transition
table forbids, a missing target, invalid input, or a request the policy does
not decide. Each class names its HTTP answer for the admin API; constructors
only store fields.

    PolicyError
    ├── AdminError             an admin operation was rejected             (400)
    │   ├── ValidationError        missing note/actor, bad value            (400)
    │   ├── NotFoundError          no such association / device / user      (404)
    │   ├── TransitionError        action not allowed in the current state  (409)
    │   ├── ConflictError          would make one name mean two users       (409)
    │   └── PushConflictError      a configuration write would push what    (409)
    │                              cannot work (``problems`` names each)
    └── UndecidableRequest     OPTIONS, or no user/DeviceId: not decided   (500, a shell bug)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "AdminError",
    "ConflictError",
    "NotFoundError",
    "PolicyError",
    "PushConflictError",
    "TransitionError",
    "UndecidableRequest",
    "ValidationError",
]


class PolicyError(Exception):
    """Base class of the policy's exceptions; ``http_status`` is the admin API answer."""

    http_status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class AdminError(PolicyError):
    http_status = 400


class ValidationError(AdminError):
    """An admin operation lacks its note or actor, or carries a bad value."""


class NotFoundError(AdminError):
    """The association, device or user named by an admin operation does not exist."""

    http_status = 404


class TransitionError(AdminError):
    """The transition table does not allow ``action`` in ``state``."""

    http_status = 409

    def __init__(self, message: str, state: str, action: str) -> None:
        super().__init__(message)
        self.state = state
        self.action = action


class ConflictError(AdminError):
    """The write would make one name (principal, email, alias) mean two users."""

    http_status = 409


class PushConflictError(AdminError):
    """A configuration write would push a mailbox that cannot work on a device
    (``problems``: ``sentry.policy.pushcheck.PushProblem`` values)."""

    http_status = 409

    def __init__(self, message: str, problems: Sequence[Any]) -> None:
        super().__init__(message)
        self.problems = tuple(problems)


class UndecidableRequest(PolicyError):
    """``decide`` was given a request it does not decide (OPTIONS, no user or DeviceId)."""
