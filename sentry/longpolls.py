"""The registry of held long polls, for live revocation.

A Ping (or a Sync with Wait/HeartbeatInterval) may sit upstream for up to an
hour. When its association stops being allowed, the gateway must answer it at
once. Each held request registers a ``HeldPoll`` with its association key and
the task serving it; ``revoke`` stores the new decision on the poll and
cancels that task. The handler catches the cancellation, sees the decision,
un-cancels itself and answers with the refusal (or the wipe). No extra task or
future per poll: a held Ping costs one small object in two dicts.

Once the upstream answer has started streaming back, a poll is ``responding``
and is no longer revocable; the next request of the association is refused.

Answer first, account after. A bulk block ends hundreds of polls at once;
if each task answered its own device, the last device would wait for every
task's whole bookkeeping before it (the backend leg closed, metrics, the
access line). So the holder may leave on its poll what answering needs
(``context``) and the registry an ``answer_now`` callback: ``end`` then
writes every revoked poll's answer first, in one pass, and cancels the tasks
afterwards; each task finds its answer already written (``answer``) and only
accounts for it. Without them (or when answering at once fails) the task
answers as before.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Set
from typing import Any, Generic, TypeVar

import structlog

__all__ = ["HeldPoll", "LongPolls"]

log = structlog.get_logger("sentry.longpolls")

K = TypeVar("K")
D = TypeVar("D")


class HeldPoll(Generic[K, D]):
    """One held request: its key, its task, and the revoking decision if any."""

    __slots__ = (
        "answer",
        "command",
        "context",
        "ended",
        "key",
        "responding",
        "revoked_at",
        "revoked_by",
        "shutdown",
        "task",
    )

    def __init__(self, key: K, command: str, task: asyncio.Task[object]) -> None:
        self.key = key
        self.command = command
        self.task = task
        self.responding = False
        self.revoked_by: D | None = None
        self.revoked_at: float | None = None
        self.shutdown = False
        self.ended = False  # its task was cancelled to answer the revocation
        self.context: Any = None  # what LongPolls.answer_now needs (the holder's)
        self.answer: Any = None  # the answer answer_now wrote, when it did


class LongPolls(Generic[K, D]):
    """Held polls indexed by association key."""

    def __init__(self) -> None:
        self._by_key: dict[K, set[HeldPoll[K, D]]] = {}
        self._count: dict[str, int] = {}
        # answers a revoked poll's device at once (module comment); None: its task does
        self.answer_now: Callable[[HeldPoll[K, D]], None] | None = None

    def hold(self, key: K, command: str) -> HeldPoll[K, D]:
        """Register the current task as a held poll for ``key``."""
        task = asyncio.current_task()
        assert task is not None, "hold() must run inside a task"
        poll: HeldPoll[K, D] = HeldPoll(key, command, task)
        self._by_key.setdefault(key, set()).add(poll)
        self._count[command] = self._count.get(command, 0) + 1
        return poll

    def release(self, poll: HeldPoll[K, D]) -> None:
        """Forget a poll (always called, in a finally)."""
        polls = self._by_key.get(poll.key)
        if polls is None or poll not in polls:
            return
        polls.discard(poll)
        if not polls:
            del self._by_key[poll.key]
        self._count[poll.command] -= 1

    def revoke(self, key: K, decision: D) -> int:
        """End every revocable poll of ``key`` with ``decision``; return how many."""
        marked = self.mark(key, decision)
        self.end(marked)
        return len(marked)

    def mark(self, key: K, decision: D) -> list[HeldPoll[K, D]]:
        """Store ``decision`` on every revocable poll of ``key`` without ending
        it yet (``end``): a caller answers its own request first. A marked poll
        whose backend answers meanwhile relays that answer, as one that
        answered just before the change would."""
        marked = []
        for poll in list(self._by_key.get(key, ())):
            if poll.responding or poll.revoked_by is not None:
                continue
            poll.revoked_by = decision
            poll.revoked_at = time.monotonic()
            marked.append(poll)
        return marked

    def end(self, polls: Iterable[HeldPoll[K, D]]) -> None:
        """End marked ``polls``: every device's answer first (``answer_now``),
        then their tasks are cancelled (each accounts for its revocation, or
        answers it when it was not answered at once); a poll already ended,
        responding or finished is left alone."""
        ending = []
        for poll in polls:
            if poll.ended or poll.responding or poll.task.done():
                continue
            poll.ended = True
            ending.append(poll)
        answer = self.answer_now
        if answer is not None:
            for poll in ending:
                if poll.context is None or poll.revoked_by is None:
                    continue
                try:
                    answer(poll)
                except Exception as exc:  # the task answers instead
                    log.error("answer_now_failed", command=poll.command, exc_info=exc)
        for poll in ending:
            poll.task.cancel(msg="sentry: access revoked")

    def keys(self) -> Set[K]:
        """Keys that have at least one held poll."""
        return self._by_key.keys()

    def count(self, command: str | None = None) -> int:
        """Held polls, in all or of one command."""
        if command is None:
            return sum(self._count.values())
        return self._count.get(command, 0)

    def cancel_all(self) -> int:
        """Shutdown: end every held poll (its handler answers "ask again"); return how many."""
        polls = [p for ps in self._by_key.values() for p in ps if not p.responding]
        for poll in polls:
            if poll.revoked_by is None:
                poll.shutdown = True
                poll.task.cancel(msg="sentry: shutting down")
        # marked by an answer-first commit, not yet ended: they answer the revocation
        self.end([p for p in polls if p.revoked_by is not None])
        return len(polls)
