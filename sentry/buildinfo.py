"""What this build is: the package version and the Python running it.

Used by ``sentry --version``, the ``sentry_build_info`` metric and the admin
API's OpenAPI document, so all three say the same thing.
"""

from __future__ import annotations

import platform
from importlib import metadata

__all__ = ["PACKAGE", "python_version", "version", "version_text"]

PACKAGE = "eas-sentry"


def version() -> str:
    """The installed package's version (``0+unknown`` when not installed)."""
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return "0+unknown"


def python_version() -> str:
    """The running interpreter's version, e.g. ``3.11.7``."""
    return platform.python_version()


def version_text() -> str:
    """``sentry 0.1.0 (Python 3.11.7)``."""
    return f"sentry {version()} (Python {python_version()})"
