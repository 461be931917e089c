"""AccessState's last-seen batching: written on a timer in production, only when
asked in the test harness, so a test that counts store writes counts its own."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import aiohttp

from sentry.policy import Change, Touch
from sentry.testing.eas_client import EasTestClient
from sentry.testing.gateway import DemoGateway, demo_gateway

FOLDERSYNC = '<FolderSync xmlns="FolderHierarchy"><SyncKey>0</SyncKey></FolderSync>'


def record_touch_writes(gw: DemoGateway) -> list[int]:
    """Wrap the store: the sizes of the Touch-only batches it is given."""
    store = gw.gateway.store
    sizes: list[int] = []
    original = store.apply

    async def apply(changes: Sequence[Change]) -> None:
        if changes and all(isinstance(c, Touch) for c in changes):
            sizes.append(len(changes))
        await original(changes)

    store.apply = apply  # type: ignore[method-assign]
    return sizes


async def seen_twice(gw: DemoGateway, session: aiohttp.ClientSession, device: str) -> None:
    """Provision (first sight, a durable write), then a request that only touches."""
    url = f"{gw.url}/Microsoft-Server-ActiveSync"
    client = EasTestClient(session, url, "alice", "secret", device_id=device)
    await client.provision()
    assert (await client.post("FolderSync", FOLDERSYNC)).status == 200


async def test_the_harness_writes_last_seen_only_when_asked(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    async with demo_gateway(tmp_path) as gw:
        writes = record_touch_writes(gw)
        await seen_twice(gw, session, "TOUCH0001")
        assert writes == []  # no flush runs on a timer in the harness
        assert await gw.gateway.state.flush_touches() == 1
        assert writes == [1]
        assert await gw.gateway.state.flush_touches() == 0  # nothing pending any more


async def test_a_flush_interval_writes_last_seen_on_its_own(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    async with demo_gateway(tmp_path, touch_flush_seconds=0.01) as gw:
        writes = record_touch_writes(gw)
        await seen_twice(gw, session, "TOUCH0002")
        async with asyncio.timeout(10):  # a hang guard: the flush runs every 10 ms
            while not writes:
                await asyncio.sleep(0.01)
        assert sum(writes) >= 1


async def test_a_large_commit_logs_where_its_time_went(tmp_path: Path) -> None:
    from structlog.testing import capture_logs

    from sentry.access import LARGE_COMMIT
    from sentry.model import AssociationKey
    from sentry.policy import preapprove

    async with demo_gateway(tmp_path) as gw:
        state = gw.gateway.state

        def build(prefix: str, rows: int):  # type: ignore[no-untyped-def]
            keys = [AssociationKey(f"{prefix}{i:04d}", "alice") for i in range(rows)]
            return lambda snap, now: [
                c for k in keys for c in preapprove(snap, k, note="n", actor="t", now=now)
            ]

        with capture_logs() as logs:
            committed = await state.commit(build("BULKLOG", LARGE_COMMIT))
            await state.commit(build("SMALLLOG", 1))  # a small one: no line
    (line,) = [e for e in logs if e["event"] == "large_commit"]
    assert line["changes"] == len(committed.changes) >= LARGE_COMMIT
    assert committed.write_seconds > 0 and committed.absorb_seconds > 0
    for phase in ("build_ms", "write_ms", "absorb_ms"):
        assert 0 <= line[phase] <= line["total_ms"]
