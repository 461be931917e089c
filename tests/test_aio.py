"""``sentry.aio``: named tasks, and steps that finish even when their caller is cancelled."""

from __future__ import annotations

import asyncio

import pytest

from sentry.aio import cancel_wait, create_task, uncancellable


async def test_an_uncancellable_step_finishes_before_the_cancellation_propagates() -> None:
    gate, entered, done = asyncio.Event(), asyncio.Event(), []

    async def step() -> str:
        entered.set()
        await gate.wait()
        done.append("written")
        return "ok"

    caller = create_task(uncancellable(step(), name="t:step"), name="t:caller")
    await entered.wait()
    caller.cancel()
    caller.cancel()  # a second cancellation while it waits changes nothing
    await asyncio.sleep(0)  # let the caller see its cancellations (it keeps waiting)
    assert not caller.done()
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert done == ["written"]


async def test_an_uncancellable_step_returns_and_raises_like_the_step() -> None:
    async def ok() -> int:
        return 7

    async def bad() -> int:
        raise ValueError("no")

    assert await uncancellable(ok(), name="t:ok") == 7
    with pytest.raises(ValueError, match="no"):
        await uncancellable(bad(), name="t:bad")


async def test_cancel_wait_ends_a_running_task_and_returns_once_it_has_ended() -> None:
    ended: list[str] = []

    async def chore() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0)  # its own cleanup, awaited before cancel_wait returns
            ended.append("cleaned up")

    task = asyncio.ensure_future(chore())
    await asyncio.sleep(0)
    await cancel_wait(task)
    assert task.cancelled() and ended == ["cleaned up"]
    await cancel_wait(task)  # already over: nothing to do
    await cancel_wait(None)
