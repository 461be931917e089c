"""From a decision to the answer on the wire, as a pure function.

Approach. The handler decides (``decide``) and, unless the decision is a
``Forward``, sends what ``answer`` returns: a ``sentry.eas.responses.Response``
value built from the decision (a refusal carries the refusal style it was
decided under), the command, the protocol version and whether the body was
MIME mail. Keeping this mapping
here (not in the HTTP shell) makes every answer testable without a socket
and keeps the rules in one place:

- a wipe acknowledgement gets Provision Status 1, or Status 2 with the
  directive again (MS-ASPROV 3.2.5.1.2.2);
- an account-only wipe is never escalated to a full wipe: a client older than
  16.1 (which has no ``AccountOnlyRemoteWipe``) is refused with 129 until it
  speaks 16.1;
- any other wipe: ``wipe_requested`` (RemoteWipe on Provision, 140 or 449
  elsewhere);
- a refusal: the ``http403`` style answers 403 whatever the protocol;
  otherwise the command's own Status (129, 177 ...) from 14.0 on, else 403.

Decisions and the other arguments are hashable values, so the shell may
memoise ``answer``.
"""

from __future__ import annotations

from sentry.eas import responses
from sentry.eas.request import Command
from sentry.eas.responses import Response
from sentry.eas.status import CommonStatus
from sentry.eas.versions import at_least
from sentry.model import RefusalStyle

from .decisions import Refuse, Wipe

__all__ = ["answer"]


def answer(
    decision: Refuse | Wipe,
    command: Command,
    version: str | None,
    *,
    mime_body: bool = False,
) -> Response:
    """The response for a decision that is not a ``Forward``."""
    if isinstance(decision, Wipe):
        return _wipe(decision, command, version, mime_body)
    if decision.style is RefusalStyle.HTTP403:
        return responses.forbidden()
    return responses.refusal(command, version, decision.status, mime_body=mime_body)


def _wipe(decision: Wipe, command: Command, version: str | None, mime_body: bool) -> Response:
    only = decision.account_only
    if only and not at_least(version, 16, 1):
        # AccountOnlyRemoteWipe exists only at 16.1; never escalate to a full
        # wipe of the whole device: refuse until the client speaks 16.1.
        return responses.refusal(command, version, CommonStatus.DeviceIsBlockedForThisUser)
    if decision.acknowledged is not None and command is Command.Provision:
        return responses.wipe_acknowledged(decision.acknowledged, account_only=only)
    return responses.wipe_requested(command, version, account_only=only, mime_body=mime_body)
