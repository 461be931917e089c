"""Console sessions: server-side, bounded, expiring; the cookie holds only an id.

Approach. Signing in with a token creates a ``Session`` here: a random id
(the cookie's value, 256 bits), its own random CSRF token, the role the
token granted, the name the administrator gave (the actor of the audit
log) and the token's *generation* (a digest of the token at sign-in).
Nothing else leaves the server. A session ends when it is signed out, when
it has been idle for ``idle`` seconds, ``lifetime`` seconds after sign-in
whatever its use, or when the token it was made with is rotated (its
generation no longer matches). The table holds at most ``limit`` sessions:
expired ones are dropped first, then the least recently used. Pure data:
the clock is an argument, so the rules are tested without waiting.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field

from sentry.admin.auth import Role

__all__ = ["Session", "Sessions"]


@dataclass
class Session:
    """One signed-in browser."""

    id: str
    csrf: str
    role: Role
    actor: str
    generation: str
    created: float
    used: float
    flashes: list[tuple[str, str]] = field(default_factory=list)  # (kind, text) to show once

    @property
    def can_act(self) -> bool:
        """Whether this session may change anything (its token's role)."""
        return self.role is Role.ADMIN

    def csrf_ok(self, given: str | None) -> bool:
        """Whether ``given`` is this session's CSRF token (constant time)."""
        if not given:
            return False
        return hmac.compare_digest(given.encode("utf-8"), self.csrf.encode("utf-8"))

    def flash(self, kind: str, text: str) -> None:
        """A message for the next page this session sees (``ok`` or ``error``)."""
        self.flashes = [*self.flashes[-4:], (kind, text)]

    def take_flashes(self) -> list[tuple[str, str]]:
        out, self.flashes = self.flashes, []
        return out


class Sessions:
    """The session table (see the module comment)."""

    def __init__(self, *, idle: float, lifetime: float, limit: int) -> None:
        self.idle = idle
        self.lifetime = lifetime
        self.limit = limit
        self._by_id: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def create(self, role: Role, actor: str, generation: str, now: float) -> Session:
        """A new session (never a reused id: no fixation)."""
        self._make_room(now)
        session = Session(
            id=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            role=role,
            actor=actor,
            generation=generation,
            created=now,
            used=now,
        )
        self._by_id[session.id] = session
        return session

    def get(self, session_id: str | None, generation: str | None, now: float) -> Session | None:
        """The live session of ``session_id`` (its use noted), or None. A session
        that expired or whose token changed (``generation``) is ended here."""
        if not session_id:
            return None
        session = self._by_id.get(session_id)
        if session is None:
            return None
        if self._expired(session, now) or session.generation != generation:
            self.end(session_id)
            return None
        session.used = now
        return session

    def peek(self, session_id: str | None) -> Session | None:
        """The session of ``session_id`` without checks (to read its role)."""
        return self._by_id.get(session_id or "")

    def end(self, session_id: str) -> bool:
        """Sign a session out; False when there was none."""
        return self._by_id.pop(session_id, None) is not None

    def _expired(self, session: Session, now: float) -> bool:
        return now - session.used >= self.idle or now - session.created >= self.lifetime

    def _make_room(self, now: float) -> None:
        for sid in [s.id for s in self._by_id.values() if self._expired(s, now)]:
            self.end(sid)
        while len(self._by_id) >= self.limit:
            oldest = min(self._by_id.values(), key=lambda s: s.used)
            self.end(oldest.id)
