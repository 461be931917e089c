"""Held long polls take the lean client (``proxy/leanclient.py``) end to end:
the backend's answer is relayed and its connection parked for the next Ping;
a revocation answers the device at once and closes the backend connection
right after (``LeanClient.retire``)."""

from __future__ import annotations

import asyncio

import aiohttp

from sentry.model import AssociationKey
from sentry.policy import block
from sentry.proxy.leanclient import LeanClient
from sentry.testing.gateway import DemoGateway


def _lean(gateway: DemoGateway) -> LeanClient:
    lean = gateway.gateway.upstreams.pools["exchange"].lean
    assert lean is not None
    return lean


async def test_a_ping_the_backend_answers_parks_its_connection_for_the_next(
    gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    backend = gateway.backend("exchange")
    lean = _lean(gateway)
    for n in (1, 2):
        _, ping = await gateway.held_ping(session, "alice", "LEAN000001")
        await backend.wait_held(1)
        assert lean.open == 1 and lean.idle == 0  # the parked connection carries the second
        backend.inject_message("alice", f"news {n}", "hello")
        r = await asyncio.wait_for(ping, 30)
        assert (r.status, r.text("Status")) == (200, "2")
        assert lean.idle == 1


async def test_a_revoked_ping_closes_its_backend_connection(
    gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    backend = gateway.backend("exchange")
    lean = _lean(gateway)
    _, ping = await gateway.held_ping(session, "bob", "LEAN000002")
    await backend.wait_held(1)
    state = gateway.gateway.state
    key = AssociationKey("LEAN000002", "bob")
    await state.apply(block(state.snapshot, key, note="lost", actor="t", now=state.clock()))
    r = await asyncio.wait_for(ping, 30)
    assert r.text("Status") == "129"
    async with asyncio.timeout(10):  # the backend sees its held request's connection end
        while backend.held:
            await asyncio.sleep(0.005)
    assert lean.open == 0 and lean.idle == 0 and lean.retired == 0
