"""What ``/readyz`` reports: the problems that make the gateway not ready, and notes.

Approach. The admin health routes (``sentry.admin.health``) take two
callables; here they are built over a running ``Gateway``, read at every
request. A problem (the store, a backend pool, the cluster follower, the
device listener) makes ``/readyz`` answer 503; a note (a directory that
cannot be synced, a worker of ``gateway.workers`` being restarted) is shown
without changing the answer, since the gateway still decides and forwards.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sentry.worker import read_status

if TYPE_CHECKING:
    from sentry.app import Gateway

__all__ = ["readiness_notes", "readiness_problems"]


def readiness_problems(gw: Gateway) -> Callable[[], list[str]]:
    """What makes ``/readyz`` answer not ready: a store that cannot keep changes,
    a pool without a healthy server (yet), a cluster follower that cannot read
    the change feed, no device listener yet."""

    def problems() -> list[str]:
        out = []
        status = gw.store.status
        if status.problem is not None:
            out.append(f"store {status.problem.fault.value}: {status.problem.detail}")
        for pool in gw.upstreams.pools.values():
            out.extend(pool.not_ready())
        if gw.follower is not None:
            out.extend(gw.follower.problems())
        if not gw.proxy_url:
            out.append("device listener not started")
        return out

    return problems


def readiness_notes(gw: Gateway) -> Callable[[], list[str]]:
    """What ``/readyz`` adds without making the gateway not ready: a directory
    that cannot be synced (requests are decided from the last sync); under
    ``gateway.workers``, the other workers that are not serving (restarting:
    the rest of the node serves)."""

    def notes() -> list[str]:
        out = [] if gw.directory is None else gw.directory.notes()
        if gw.worker is not None:
            status = read_status(Path(gw.worker.run_dir))
            out += [
                f"worker {w['index']} is not serving (being restarted)"
                for w in status.get("workers", [])
                if not w.get("ready")
            ]
        return out

    return notes
