"""SerialRunner: the properties its users (AccessState's commit queue, tested
in test_access.py) do not show on their own."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from sentry.serial import SerialRunner

REQUEST: contextvars.ContextVar[str | None] = contextvars.ContextVar("request", default=None)


async def test_a_job_sees_its_own_callers_context_and_no_one_elses() -> None:
    runner = SerialRunner(asyncio.Lock(), name="test:serial")
    gate = asyncio.Event()
    seen: list[str | None] = []

    async def job() -> None:
        await gate.wait()
        seen.append(REQUEST.get())

    async def caller(request: str | None) -> None:
        if request is not None:
            REQUEST.set(request)
        await runner.run(job)

    callers = asyncio.gather(caller("R-ONE"), caller(None), caller("R-THREE"))
    await asyncio.sleep(0)
    gate.set()
    await callers
    assert seen == ["R-ONE", None, "R-THREE"]  # the second set nothing: it sees nothing


async def test_a_runner_stopped_at_shutdown_cancels_the_callers_it_leaves() -> None:
    runner = SerialRunner(asyncio.Lock(), name="test:serial")
    started, never = asyncio.Event(), asyncio.Event()
    ran: list[str] = []

    async def held() -> None:
        started.set()
        await never.wait()

    async def other() -> None:
        ran.append("other")

    first = asyncio.ensure_future(runner.run(held))
    second = asyncio.ensure_future(runner.run(other))
    await asyncio.wait_for(started.wait(), 10)
    task = runner._runner  # what the loop's shutdown cancels
    assert task is not None
    task.cancel()
    for caller in (first, second):
        with pytest.raises(asyncio.CancelledError):
            await caller
    assert ran == []
    assert await runner.run(other) is None and ran == ["other"]  # a new runner starts
