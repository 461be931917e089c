"""Helpers for the console tests: devices that talk to the gateway, payloads."""

from __future__ import annotations

from xml.sax.saxutils import escape

import aiohttp

from sentry.testing.eas_client import EasTestClient, ProvisionFailed
from sentry.testing.gateway import DemoGateway

XSS = "<img src=x onerror=alert(1)>"
"""A payload a device can send in its DeviceType, User-Agent and DeviceInformation."""
XSS_ESCAPED = "&lt;img src=x onerror=alert(1)&gt;"


def phone(
    gw: DemoGateway,
    session: aiohttp.ClientSession,
    user: str,
    device_id: str,
    device_type: str = "iPhone",
    user_agent: str = "Apple-iPhone15C2/2104.1",
) -> EasTestClient:
    """An EAS client of ``user`` on ``device_id`` through the gateway."""
    url = f"{gw.url}/Microsoft-Server-ActiveSync"
    return EasTestClient(
        session, url, user, "secret", device_id=device_id, device_type=device_type,
        extra_headers={"User-Agent": user_agent},
    )  # fmt: skip


async def first_contact(client: EasTestClient, model: str = "iPhone15,2") -> bool:
    """Provision once (DeviceInformation included); True when it was allowed."""
    info = {"Model": escape(model), "FriendlyName": "Work phone", "OS": "iOS 17.1"}
    try:
        await client.provision(info)
    except ProvisionFailed:
        return False
    return True


async def seed(gw: DemoGateway, session: aiohttp.ClientSession) -> None:
    """Four auto-blocked rows, one of them carrying the XSS payload everywhere."""
    for user, device_id, device_type in (
        ("alice", "ALICEPHONE1", "iPhone"),
        ("alice", "ALICETAB3", "iPad"),
        ("bob", "BOBPHONE2", "Android"),
    ):
        assert not await first_contact(phone(gw, session, user, device_id, device_type))
    evil = phone(gw, session, "shared", "EVILPHONE4", device_type=XSS, user_agent="Evil/1 " + XSS)
    assert not await first_contact(evil, model=XSS)
