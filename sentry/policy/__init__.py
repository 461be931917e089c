"""Access decisions: pure functions from state to decisions and changes.

Nothing here awaits, logs or does I/O, and time comes in as ``now`` (Unix
seconds). The shell's loop, per request::

    outcome = decide(request, facts, snapshot, now)   # under snapshot.prefs
    await store.apply(outcome.changes)      # one transaction; Touches batched
    snapshot.apply(outcome.changes)         # memory follows the store
    ... forward, or send answer(outcome.decision, command, version, ...)

and per admin, registry or preference change, the one commit path
(``AccessState.commit``; ``planner.absorb`` is its pure part)::

    changes = admin.block(snapshot, key, note=..., actor=..., now=now)  # under the writer lock
    await store.apply(changes)                          # durable first
    done = absorb(changes, snapshot, held_poll_keys, now)
    # absorb: keys = affected_keys(changes, snapshot) (before applying); snapshot.apply(changes);
    #   done.revoked = held keys whose evaluate(...) is no longer Forward;
    #   done.refreshed = refresh(keys, ...), already applied to the snapshot
    for key, decision in done.revoked: end the held poll with decision
    await store.apply(done.refreshed)                   # derived data: best effort

and when the backend answers a forwarded request (accepted: not a 401)::

    changes = backend_accepted(snapshot, key, now)      # verified; may establish the type

Modules: ``decide`` (the request path), ``rules`` (the table of design.md §4),
``admin`` (Allow/Block/Reset/Wipe/Remove/Link To/Pre-approve), ``access_rules``
and ``access_admin`` (device access rules and quarantine), ``registry`` (devices,
compliance, users, configuration), ``established`` (one backend type per
device), ``expiry`` (unverified rows), ``rekey`` (realm and alias changes),
``transitions`` (the one table of admin states), ``planner`` (what a
durable change list does in memory: the commit path's pure part), ``snapshot`` (in-memory
state and indexes), ``changes``, ``decisions``, ``answers`` (decision -> wire
answer), ``affected``, ``ambiguity``, ``templates``, ``pushcheck`` (pushes
checked at configuration time), ``prefs`` (where each preference comes
from), ``audit``, ``reasons``, ``errors``.
"""

from __future__ import annotations

from .access_admin import add_rule, move_rule, remove_rule, rule_view
from .admin import allow, block, link_to, preapprove, remove, reset, wipe
from .affected import affected_keys
from .ambiguity import record_policy_fingerprint
from .answers import answer
from .changes import (
    AppendAudit,
    AppendHistory,
    Change,
    Changes,
    DeleteAssociation,
    DeleteDevice,
    DeleteEstablished,
    DeleteLabel,
    DeletePool,
    DeleteSetting,
    DeleteUser,
    MoveHistory,
    PutAccessRules,
    PutAssociation,
    PutDevice,
    PutEstablished,
    PutLabel,
    PutPool,
    PutPreferences,
    PutRealms,
    PutRouting,
    PutSetting,
    PutUser,
    Touch,
)
from .decide import decide, evaluate, options_pool, refresh, request_key
from .decisions import Decision, Forward, Outcome, ProvisionKind, Refuse, RequestFacts, Wipe
from .errors import (
    AdminError,
    ConflictError,
    NotFoundError,
    PolicyError,
    PushConflictError,
    TransitionError,
    UndecidableRequest,
    ValidationError,
)
from .established import backend_accepted, backend_scope, reset_backend_type
from .expiry import expire_unverified
from .planner import Absorbed, absorb
from .pushcheck import PushProblem, check_pushes, new_push_problems, push_problems
from .reasons import refusal_status
from .registry import (
    delete_label,
    delete_setting,
    put_label,
    put_pool,
    put_setting,
    register_device,
    retire_device,
    set_compliance,
    set_preferences,
    set_routing,
    upsert_user,
)
from .rekey import realm_changes
from .snapshot import Snapshot
from .templates import PushedMailbox, PushedMailboxes, resolve_pushed_mailboxes
from .transitions import TRANSITIONS, Action, AdminState, state_of

__all__ = [
    "TRANSITIONS",
    "Absorbed",
    "Action",
    "AdminError",
    "AdminState",
    "AppendAudit",
    "AppendHistory",
    "Change",
    "Changes",
    "ConflictError",
    "Decision",
    "DeleteAssociation",
    "DeleteDevice",
    "DeleteEstablished",
    "DeleteLabel",
    "DeletePool",
    "DeleteSetting",
    "DeleteUser",
    "Forward",
    "MoveHistory",
    "NotFoundError",
    "Outcome",
    "PolicyError",
    "ProvisionKind",
    "PushConflictError",
    "PushProblem",
    "PushedMailbox",
    "PushedMailboxes",
    "PutAccessRules",
    "PutAssociation",
    "PutDevice",
    "PutEstablished",
    "PutLabel",
    "PutPool",
    "PutPreferences",
    "PutRealms",
    "PutRouting",
    "PutSetting",
    "PutUser",
    "Refuse",
    "RequestFacts",
    "Snapshot",
    "Touch",
    "TransitionError",
    "UndecidableRequest",
    "ValidationError",
    "Wipe",
    "absorb",
    "add_rule",
    "affected_keys",
    "allow",
    "answer",
    "backend_accepted",
    "backend_scope",
    "block",
    "check_pushes",
    "decide",
    "delete_label",
    "delete_setting",
    "evaluate",
    "expire_unverified",
    "link_to",
    "move_rule",
    "new_push_problems",
    "options_pool",
    "preapprove",
    "push_problems",
    "put_label",
    "put_pool",
    "put_setting",
    "realm_changes",
    "record_policy_fingerprint",
    "refresh",
    "refusal_status",
    "register_device",
    "remove",
    "remove_rule",
    "request_key",
    "reset",
    "reset_backend_type",
    "resolve_pushed_mailboxes",
    "retire_device",
    "rule_view",
    "set_compliance",
    "set_preferences",
    "set_routing",
    "state_of",
    "upsert_user",
    "wipe",
]
