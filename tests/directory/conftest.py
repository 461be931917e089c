"""Fixtures for the directory sync: a real OpenLDAP slapd (started by the test, in its
temporary directory) and a gateway whose ``directory.ldap`` points at it.

Without slapd the tests are skipped with the reason; with ``CI`` or
``SENTRY_REQUIRE_SLAPD=1`` in the environment they fail instead (CI installs
slapd: ``.ci/run``)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from directory_support import PEOPLE

from sentry.testing.slapd import Slapd, slapd_binary, start_slapd


def require_slapd() -> None:
    """Skip (or, in CI, fail) when OpenLDAP's slapd is not installed."""
    if slapd_binary() is not None:
        return
    why = "OpenLDAP slapd is not installed (apt-get install slapd ldap-utils)"
    if os.environ.get("CI") or os.environ.get("SENTRY_REQUIRE_SLAPD") == "1":
        pytest.fail(f"{why}: required here (CI or SENTRY_REQUIRE_SLAPD=1)")
    pytest.skip(why)


@pytest.fixture
async def slapd(tmp_path: Path) -> AsyncIterator[Slapd]:
    require_slapd()
    server = await start_slapd(tmp_path / "slapd", PEOPLE)
    try:
        yield server
    finally:
        await server.stop()
