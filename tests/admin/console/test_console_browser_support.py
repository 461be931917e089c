"""The browser tests skip only where the browser is not required: CI fails."""

from __future__ import annotations

from pathlib import Path

import browser_support
import pytest
from _pytest.outcomes import Failed, Skipped


@pytest.fixture
def no_chromium(monkeypatch, tmp_path: Path):
    monkeypatch.setattr(browser_support, "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("SENTRY_REQUIRE_BROWSER", raising=False)


def test_without_chromium_the_tests_skip_with_the_reason(no_chromium):
    with pytest.raises(Skipped, match=r"no Chromium at .*no-chromium"):
        browser_support.require_browser()


@pytest.mark.parametrize(("name", "value"), [("CI", "true"), ("SENTRY_REQUIRE_BROWSER", "1")])
def test_where_the_browser_is_required_they_fail(no_chromium, monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(Failed, match="browser tests required"):
        browser_support.require_browser()


@pytest.mark.parametrize("value", ["", "0", "false"])
def test_ci_off_values_do_not_require_it(no_chromium, monkeypatch, value):
    monkeypatch.setenv("CI", value)
    assert not browser_support.browser_required()
