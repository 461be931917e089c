"""What a scripted conversation sends and what it answers: ``req``, ``Reply``, ``describe``.

Approach. ``req`` builds an ``EasRequest`` as the parser would produce it
(no parser involved: the user name goes through the one principal rule under
the given realms). A ``Reply`` is one decided request of a
``sentry.testing.conversation.Conversation``: its decision, its row and the
transcript line, with expectations that read like the transcript
(``expect_forward``, ``expect_refuse``, ``expect_wipe``...); each returns
the reply, and a failed one raises ``AssertionError`` with the whole
transcript. ``describe`` renders a decision on one line
(``Refuse 129 [AUTO_BLOCK]``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from sentry.eas.request import Command, EasRequest, Identity
from sentry.eas.status import WipeAckStatus
from sentry.model import (
    NO_REALMS,
    THROWAWAY_DEVICE_IDS,
    Realms,
    UnlinkCause,
    canonical_device_id,
    canonical_principal,
    principal_domain,
)
from sentry.policy.changes import Touch
from sentry.policy.decisions import Decision, Forward, Outcome, Refuse, Wipe
from sentry.policy.reasons import ordered

if TYPE_CHECKING:
    from sentry.testing.conversation import Conversation

__all__ = ["Reply", "describe", "req"]


def req(
    user: str,
    device: str,
    command: str | Command = "Sync",
    device_type: str = "iPhone",
    version: str | None = "16.1",
    *,
    user_agent: str | None = None,
    policy_key: int | None = None,
    realms: Realms = NO_REALMS,
) -> EasRequest:
    """An ``EasRequest`` as the parser would produce it (Basic-auth user)."""
    key = canonical_principal(user, realms)
    if key is None:
        raise ValueError(f"{user!r} names no principal")
    cmd = command if isinstance(command, Command) else Command(command)
    domain = principal_domain(key)
    return EasRequest(
        method="POST",
        command=cmd,
        user=Identity(key=key, raw=user, domain=domain, source="authorization"),
        device_id=canonical_device_id(device),
        device_id_raw=device,
        device_type=device_type,
        protocol_version=version,
        policy_key=policy_key,
        locale=None,
        user_agent=user_agent,
        is_throwaway_device=canonical_device_id(device) in THROWAWAY_DEVICE_IDS,
    )


def describe(decision: Decision) -> str:
    """``Forward exchange``, ``Refuse 129 [AUTO_BLOCK]``, ``Wipe account_only=False``."""
    reasons = ",".join(r.value for r in ordered(decision.reasons))
    if isinstance(decision, Forward):
        head = f"Forward {decision.pool}"
    elif isinstance(decision, Refuse):
        head = f"Refuse {int(decision.status)}"
    else:
        head = f"Wipe account_only={decision.account_only}"
        if decision.acknowledged is not None:
            head += f" acknowledged={decision.acknowledged.name}"
    return f"{head} [{reasons}]" if reasons else head


class Reply:
    """One decided request, with transcript-style expectations (each returns self)."""

    def __init__(self, conv: Conversation, outcome: Outcome, line: str) -> None:
        self.conv = conv
        self.outcome = outcome
        self.decision = outcome.decision
        self.row = outcome.association
        self.line = line

    def expect_forward(self, pool: str | None = None, *, reasons: Iterable[str] = ()) -> Reply:
        """Forwarded (to ``pool`` when given), with exactly ``reasons``."""
        ok = isinstance(self.decision, Forward) and pool in (None, self.decision.pool)
        return self._check(ok and self._reasons_are(reasons), f"Forward {pool or ''}")

    def expect_refuse(self, status: int, *, reasons: Iterable[str] | None = None) -> Reply:
        """Refused with ``status``; with exactly ``reasons`` when given."""
        ok = isinstance(self.decision, Refuse) and int(self.decision.status) == status
        ok = ok and (reasons is None or self._reasons_are(reasons))
        return self._check(ok, f"Refuse {status} {sorted(reasons or ())}")

    def expect_wipe(self, account_only: bool | None = None) -> Reply:
        """Answered with the wipe directive (account-only when asked)."""
        d = self.decision
        ok = (
            isinstance(d, Wipe)
            and d.acknowledged is None
            and account_only in (None, d.account_only)
        )
        return self._check(ok, f"Wipe account_only={account_only}")

    def expect_wipe_ack(self, succeeded: bool, account_only: bool | None = None) -> Reply:
        """Answered as a wipe acknowledgement: Provision Status 1 (``succeeded``),
        or Status 2 with the directive again (MS-ASPROV 3.2.5.1.2.2)."""
        wanted = WipeAckStatus.Succeeded if succeeded else WipeAckStatus.Failed
        d = self.decision
        ok = (
            isinstance(d, Wipe)
            and d.acknowledged is wanted
            and account_only in (None, d.account_only)
        )
        return self._check(ok, f"Wipe acknowledged={wanted.name}")

    def expect_linked(self, device: str | None = None) -> Reply:
        """The row is linked (to managed device ``device`` when given)."""
        ok = self.row.device is not None and device in (None, self.row.device)
        return self._check(ok, f"linked to {device}")

    def expect_unlinked(self, cause: str) -> Reply:
        """The row is unlinked for ``cause`` (device_unknown, user_unknown, not_entitled)."""
        return self._check(self.row.unlinked is UnlinkCause(cause), f"unlinked ({cause})")

    def expect_verified(self, verified: bool = True) -> Reply:
        """The stored row is verified (the backend accepted it) or not."""
        row = self.conv.row_by_key(self.row.key)
        ok = row is not None and (row.verified_at is not None) is verified
        return self._check(ok, "verified" if verified else "unverified")

    def expect_touch_only(self) -> Reply:
        """Nothing but last-seen changed: the changes are one ``Touch``."""
        changes = self.outcome.changes
        ok = len(changes) == 1 and isinstance(changes[0], Touch)
        return self._check(ok, "only a Touch")

    def _reasons_are(self, reasons: Iterable[str]) -> bool:
        return {r.value for r in self.decision.reasons} == set(reasons)

    def _check(self, ok: bool, wanted: str) -> Reply:
        if not ok:
            row = f"device={self.row.device} unlinked={self.row.unlinked}"
            got = f"{describe(self.decision)}; row {row}"
            raise AssertionError(
                f"expected {wanted}\n  got {got}\n  at {self.line}\n{self.conv.render()}"
            )
        return self
