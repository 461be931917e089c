"""Header text a device controls cannot break the row it is recorded in.

aiohttp hands non-UTF-8 header bytes to the handler as lone surrogates. Such a
User-Agent used to make the first-sight write fail; the gateway then decided
the request as "registry unreachable", so a new device was let through
whatever auto-block said. The parser now stores U+FFFD for such bytes, and a
write the store refuses for any reason but being unavailable fails closed.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import structlog

from sentry.eas.wbxml import encode
from sentry.eas.xmlform import from_xml
from sentry.observability.logging import configure_logging
from sentry.policy import Change
from sentry.settings import LoggingSettings
from sentry.testing.gateway import DEMO_ROUTING, DemoGateway, demo_gateway, demo_pools
from sentry.testing.raw_client import RawConnection, request_bytes

FOLDERSYNC = encode(
    from_xml('<FolderSync xmlns="FolderHierarchy"><SyncKey>0</SyncKey></FolderSync>')
)


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[DemoGateway]:
    async with demo_gateway(
        tmp_path,
        demo_pools(),
        routing=DEMO_ROUTING,
        gateway={"tls": {"enabled": False}},
        preferences={"auto_block_unregistered": True},
    ) as g:
        yield g


def folder_sync(device_id: str) -> bytes:
    auth = base64.b64encode(b"alice:secret").decode()
    head = request_bytes(
        "POST",
        f"/Microsoft-Server-ActiveSync?Cmd=FolderSync&User=alice&DeviceId={device_id}"
        "&DeviceType=iPhone",
        [
            ("Authorization", f"Basic {auth}"),
            ("MS-ASProtocolVersion", "14.1"),
            ("Content-Type", "application/vnd.ms-sync.wbxml"),
            ("Content-Length", str(len(FOLDERSYNC))),
        ],
        content_length=False,
    )
    # A User-Agent with bytes that are not UTF-8, spliced into the head (under the
    # old rule the failed write made this "registry unreachable": forwarded).
    return head[:-2] + b"User-Agent: Apple-iPhone\xff\xfe/1\r\n\r\n" + FOLDERSYNC


async def send(gw: DemoGateway, data: bytes) -> Any:
    async with await RawConnection.open(gw.url) as conn:
        await conn.send(data)
        return await conn.response()


async def test_undecodable_user_agent_bytes_neither_break_the_row_nor_bypass_auto_block(
    gw: DemoGateway,
) -> None:
    answer = await send(gw, folder_sync("BADBYTES01"))
    assert answer.status == 200 and b"\x03129\x00" in answer.body  # refused: auto-block
    assert gw.backend("exchange").state.stats.requests["alice", "FolderSync"] == 0
    (row,) = gw.gateway.state.snapshot.on_device("BADBYTES01")
    assert row.user_agent == "Apple-iPhone\ufffd\ufffd/1"  # listed, with the bytes replaced
    assert "AUTO_BLOCK" in row.reasons


async def test_a_write_the_store_refuses_for_another_reason_fails_closed(
    gw: DemoGateway,
) -> None:
    store = gw.gateway.store

    async def refuse(changes: Sequence[Change]) -> None:
        raise ValueError("the store cannot hold this value")  # a bug, not an outage

    store.apply = refuse  # type: ignore[method-assign]
    answer = await send(gw, folder_sync("STOREBUG01"))
    assert answer.status == 200 and b"\x03129\x00" in answer.body
    assert gw.backend("exchange").state.stats.requests["alice", "FolderSync"] == 0


async def test_the_store_failure_line_carries_the_request_id_of_its_request(
    tmp_path: Path,
) -> None:
    """The request's context is bound once (``serve_device``), so a line
    logged deep in the commit path belongs to its request."""
    stream = io.StringIO()
    configure_logging(LoggingSettings(level="debug", format="json"), stream=stream)
    try:
        async with demo_gateway(tmp_path, gateway={"tls": {"enabled": False}}) as g:

            async def refuse(changes: Sequence[Change]) -> None:
                raise ValueError("the store cannot hold this value")

            g.gateway.store.apply = refuse  # type: ignore[method-assign]
            await send(g, folder_sync("STOREBUG02"))
    finally:
        structlog.reset_defaults()
    events = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    (failed,) = [e for e in events if e["event"] == "store_write_failed"]
    (access,) = [e for e in events if e["event"] == "request"]
    assert failed["request_id"] == access["request_id"]
    assert failed["device_id"] == "STOREBUG02" and access["reasons"] == ["REGISTRY_UNREACHABLE"]
