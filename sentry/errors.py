"""Errors that stop the gateway before it serves: one line naming the setting.

Approach. A problem found while starting (a certificate that cannot be read, a
log directory that does not exist, a store file that is not a database, a port
already taken) is the operator's to fix, and the fastest fix starts from the
configuration key that points at it. So every such problem is raised as a
``StartupError`` carrying that key path (``gateway.tls.key``) and a short
problem text; ``sentry.cli`` prints it as one line
``sentry: error: <key path>: <problem>`` and exits with status 2, never a
traceback. The type lives here, at the bottom layer (stdlib only), so any
layer that opens a configured resource (the store, logging, certificates) can
raise it without importing the command line.
"""

from __future__ import annotations

__all__ = ["CliError", "StartupError"]


class CliError(Exception):
    """An expected failure of a command: reported as one ``sentry: error:``
    line, exit 2. Here (not in ``sentry.cli``) so the admin commands raise it
    without importing the command line that imports them."""


class StartupError(Exception):
    """The gateway cannot start: ``key`` is the setting's path, ``problem`` what is wrong.

    ``str(error)`` is ``"<key>: <problem>"``; the command line prefixes
    ``sentry: error:`` and exits 2.
    """

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem
