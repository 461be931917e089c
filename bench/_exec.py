"""``python -m bench._exec CMD ARGS...``: prepare this process, then exec CMD.

Every child of the bench starts through here: it raises RLIMIT_NOFILE (a
held Ping costs file descriptors on both sides), asks the kernel for SIGTERM
when the bench process dies (``PR_SET_PDEATHSIG``, kept across exec), so
even a bench killed with SIGKILL leaves no server behind, then execs CMD
(``python -m ...`` or ``sentry run ...``) in its place.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

from bench.proc import raise_nofile

PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit("usage: python -m bench._exec CMD [ARGS...]")
    raise_nofile()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:  # the bench died before we got here
        raise SystemExit(1)
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
