"""Tests that need a tool from outside the virtual environment (Chromium,
promtool, wrk, valgrind and strace, a C compiler with OpenSSL's headers):
skipped with the reason where it is missing, failed instead where it is
required.

A tool is required under ``CI`` (any value but empty, ``0``, ``false``,
``no``) or when its own variable is ``1`` (``SENTRY_REQUIRE_BROWSER``,
``SENTRY_REQUIRE_PROMTOOL``, ``SENTRY_REQUIRE_WRK``,
``SENTRY_REQUIRE_VALGRIND``, ``SENTRY_REQUIRE_CC``): ``.ci/run`` installs
the tools and sets the variables, so a missing one fails CI instead of
passing it silently.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

__all__ = ["missing", "required"]


def required(variable: str) -> bool:
    """Whether a missing tool fails its tests (``CI`` or ``variable=1``)."""
    ci = os.environ.get("CI", "").strip().lower()
    return ci not in ("", "0", "false", "no") or os.environ.get(variable) == "1"


def missing(what: str, reason: str, variable: str) -> NoReturn:
    """Skip the calling test because ``reason``; fail it where ``what`` is
    required (``required(variable)``)."""
    if required(variable):
        pytest.fail(f"{what} required (CI / {variable}=1) but {reason}")
    pytest.skip(reason)
