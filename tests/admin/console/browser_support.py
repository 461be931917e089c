"""A real browser for the console tests: Playwright driving Debian's Chromium.

The tests need the ``playwright`` package (test extra) and a Chromium binary
(``/usr/bin/chromium``, or ``SENTRY_CHROMIUM``); Playwright's own browser
download is never used. Without either, the tests are skipped with the
reason, except where the browser is required: ``CI`` or
``SENTRY_REQUIRE_BROWSER=1`` in the environment (``.ci/run`` sets it) turns
the skip into a failure, so CI can never skip them silently.

Screenshots of the main pages go to ``var/screenshots/`` (git-ignored; or
``SENTRY_SCREENSHOTS``).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sentry.testing.require import missing, required

ROOT = Path(__file__).resolve().parents[3]
CHROMIUM = Path(os.environ.get("SENTRY_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(os.environ.get("SENTRY_SCREENSHOTS", ROOT / "var" / "screenshots"))
VIEWPORT = {"width": 1280, "height": 800}


def browser_required() -> bool:
    """Whether a missing browser fails the tests instead of skipping them."""
    return required("SENTRY_REQUIRE_BROWSER")


def unavailable() -> str | None:
    """Why the browser tests cannot run here (None: they can)."""
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (pip install -e '.[test]')"
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set SENTRY_CHROMIUM)"
    return None


def require_browser() -> None:
    """Skip (or, where the browser is required, fail) when it cannot run."""
    reason = unavailable()
    if reason is None:
        return
    missing("browser tests", reason, "SENTRY_REQUIRE_BROWSER")


@asynccontextmanager
async def chromium(user_data_dir: Path) -> AsyncIterator[Any]:
    """A Chromium browser context with a fresh profile in ``user_data_dir``."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        context = await p.chromium.launch_persistent_context(
            str(user_data_dir),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            viewport=VIEWPORT,
            locale="en-US",
            timezone_id="UTC",
        )
        context.set_default_timeout(20_000)
        try:
            yield context
        finally:
            await context.close()


async def screenshot(page: Any, name: str) -> Path:
    """Save the whole page as ``<SCREENSHOTS>/<name>.png``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path
