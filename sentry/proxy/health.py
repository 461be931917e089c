"""Backend server health: what the gateway believes of each server, and why.

Approach. A server is ``unknown`` until its first active check, then ``up`` or
``down``. Observations come from two places: the periodic OPTIONS probe of
each server (active) and connection failures of real requests (passive).
``ServerHealth.observe`` turns one observation into the new state and returns
a ``Transition`` only when the state changes; the pool logs that
(``backend_down`` / ``backend_up``) and counts it, so the log gets one line
per change, not one per failed check. The rules:

* one passed check marks a server up;
* a failed check of a server that is not up (never checked, or already
  down) marks it down at once; an up server goes down after
  ``failures_to_down`` consecutive failed checks;
* a passive connection failure marks it down at once (the request has
  already failed over to the next server).

Why an observation failed is a ``Failure``: a ``kind`` from the fixed table
``FAILURE_KINDS`` (a bounded metric label and API field) and a ``detail`` for
people, built here from the exception's parts, never from its text, so it
carries no URL and no credentials. ``classify`` is the one place that reads
aiohttp's exceptions for this.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from enum import StrEnum

import aiohttp

from .errors import ConnectFailed

__all__ = [
    "FAILURE_KINDS",
    "Failure",
    "ServerHealth",
    "State",
    "Transition",
    "bad_status",
    "classify",
]

FAILURE_KINDS: dict[str, str] = {
    "tls_verify": "the server's certificate did not verify",
    "tls": "the TLS handshake failed otherwise",
    "refused": "the connection was refused",
    "dns": "the server's name did not resolve",
    "connect": "the connection failed otherwise (unreachable, reset)",
    "timeout": "no answer within the timeout",
    "bad_status": "the check was answered with HTTP 5xx",
    "broken": "the connection broke during the answer",
    "error": "any other error",
}
"""Every reason a server is marked down: metric label value -> meaning."""


class State(StrEnum):
    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True)
class Failure:
    """Why one observation failed: ``kind`` (from ``FAILURE_KINDS``) and ``detail``."""

    kind: str
    detail: str


@dataclass(frozen=True)
class Transition:
    """A change of state; ``failure`` is why it went down (None going up)."""

    before: State
    after: State
    failure: Failure | None
    seconds_before: float | None  # how long it was in ``before`` (None: unknown)


@dataclass
class ServerHealth:
    """One server's state, the failure that explains it, and when."""

    state: State = State.UNKNOWN
    failures: int = 0  # consecutive failed observations
    failure: Failure | None = None  # the latest failure while failing, else None
    since: float | None = None  # when ``state`` was entered (Unix time)
    last_check: float | None = None  # the latest active check (Unix time)

    @property
    def routable(self) -> bool:
        """Requests may go to it: up, or not checked yet."""
        return self.state is not State.DOWN

    def observe(
        self, failure: Failure | None, now: float, *, failures_to_down: int, active: bool
    ) -> Transition | None:
        """Record one observation (``failure`` None: it worked)."""
        if active:
            self.last_check = now
        if failure is None:
            self.failures, self.failure = 0, None
            return self._enter(State.UP, now)
        self.failures += 1
        self.failure = failure
        if not active or self.state is not State.UP or self.failures >= failures_to_down:
            return self._enter(State.DOWN, now)
        return None

    def _enter(self, state: State, now: float) -> Transition | None:
        if state is self.state:
            return None
        before, since = self.state, self.since
        self.state, self.since = state, now
        spent = None if since is None else max(0.0, now - since)
        return Transition(before, state, self.failure, spent)


def classify(exc: BaseException) -> Failure:
    """The ``Failure`` an aiohttp client exception (or a timeout, or the lean
    client's ``ConnectFailed``) stands for."""
    if isinstance(exc, ConnectFailed):
        return _lean_failure(exc)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return Failure("tls_verify", f"certificate verification failed: {_cert(exc)}")
    if isinstance(exc, aiohttp.ClientSSLError):
        return Failure("tls", f"TLS handshake failed: {_ssl_reason(exc)}")
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return Failure("timeout", "no answer within the timeout")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _connect_failure(exc.os_error, exc.host)
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return Failure("broken", "the connection broke during the answer")
    return Failure("error", f"check failed: {type(exc).__name__}")


def _lean_failure(exc: ConnectFailed) -> Failure:
    err = exc.os_error
    if isinstance(err, ssl.SSLCertVerificationError):
        why = getattr(err, "verify_message", None) or _ssl_reason(err)
        return Failure("tls_verify", f"certificate verification failed: {why}")
    if isinstance(err, ssl.SSLError):
        return Failure("tls", f"TLS handshake failed: {_ssl_reason(err)}")
    if isinstance(err, TimeoutError):
        return Failure("timeout", "no answer within the timeout")
    if isinstance(err, OSError):
        return _connect_failure(err, exc.host)
    return Failure("error", f"check failed: {type(err).__name__}")


def bad_status(status: int) -> Failure:
    """The failure of a check answered with an HTTP error status."""
    return Failure("bad_status", f"answered HTTP {status}")


def _connect_failure(err: OSError, host: str) -> Failure:
    if isinstance(err, socket.gaierror):
        return Failure("dns", f"name resolution failed for {host}")
    if isinstance(err, ConnectionRefusedError):
        return Failure("refused", "connection refused")
    why = err.strerror or type(err).__name__
    return Failure("connect", f"cannot connect: {why}")


def _cert(exc: aiohttp.ClientConnectorCertificateError) -> str:
    err = exc.certificate_error
    if isinstance(err, ssl.SSLCertVerificationError) and err.verify_message:
        return str(err.verify_message)
    return _ssl_reason(exc)


def _ssl_reason(exc: BaseException) -> str:
    cause = exc if isinstance(exc, ssl.SSLError) else getattr(exc, "os_error", None)
    reason = getattr(cause, "reason", None)
    return str(reason) if reason else type(exc).__name__
