"""Fixtures shared by the proxy tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sentry.testing.recording_backend import RecordingBackend, start_recording_backend


@pytest.fixture
async def backend() -> AsyncIterator[RecordingBackend]:
    """A strict backend that records every byte the gateway sends it."""
    async with await start_recording_backend() as b:
        yield b
