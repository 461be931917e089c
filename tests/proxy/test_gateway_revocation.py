"""Live revocation: a held Ping is answered as soon as its association is refused.

"At once" is proven without a clock: the Pings ask for a 600 s heartbeat, the
backend would answer Status 1, and the answers are the gateway's refusals,
counted by ``apply`` (the wait on them is only a hang guard)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from sentry.longpolls import HeldPoll
from sentry.model import AssociationKey, Device, Platform
from sentry.policy import Decision, block, register_device, set_compliance, wipe
from sentry.testing.eas_client import EasTestClient
from sentry.testing.gateway import DemoGateway


async def test_admin_block_ends_a_held_ping_at_once(
    gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    _, ping = await gateway.held_ping(session, "alice", "REVOKE0001")
    state = gateway.gateway.state
    key = AssociationKey("REVOKE0001", "alice")
    ended = await state.apply(
        block(state.snapshot, key, note="stolen", actor="t", now=state.clock())
    )
    r = await asyncio.wait_for(ping, 30)
    assert ended == 1
    assert (r.status, r.text("Status")) == (200, "129")
    assert state.longpolls.count() == 0
    assert gateway.registry.get_sample_value("sentry_revoked_long_polls_total") == 1


async def test_wipe_ends_a_held_ping_with_status_140(
    gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    _, ping = await gateway.held_ping(session, "bob", "REVOKE0002")
    state = gateway.gateway.state
    key = AssociationKey("REVOKE0002", "bob")
    await state.apply(wipe(state.snapshot, key, note="left", actor="t", now=state.clock()))
    r = await asyncio.wait_for(ping, 30)
    assert (r.status, r.text("Status")) == (200, "140")


async def test_non_compliance_ends_every_mailbox_of_the_device_only(
    gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    state = gateway.gateway.state
    now = state.clock()
    device = Device("dev-1", "alice", Platform.IOS, frozenset({"COMPLY0001"}))
    await state.apply(register_device(state.snapshot, device, actor="t", now=now))
    _, alice_ping = await gateway.held_ping(session, "alice", "COMPLY0001")
    _, shared_ping = await gateway.held_ping(session, "shared", "COMPLY0001")
    _, other_ping = await gateway.held_ping(session, "alice", "COMPLY0002")  # another phone
    ended = await state.apply(
        set_compliance(state.snapshot, "dev-1", frozenset({"compromised"}), actor="t", now=now)
    )
    assert ended == 2
    for ping in (alice_ping, shared_ping):
        r = await asyncio.wait_for(ping, 30)
        assert r.text("Status") == "129"
    # the revoked handlers released their polls before answering: what is
    # still held is exactly the other phone's Ping
    assert set(state.longpolls.keys()) == {AssociationKey("COMPLY0002", "alice")}
    assert not other_ping.done()
    other_ping.cancel()


async def test_absorbing_changes_durable_elsewhere_ends_a_held_ping_without_a_write(
    gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    """``absorb`` takes in a change list already in the store (another node's
    feed): snapshot, revocation and refreshed decisions, no store write."""
    _, ping = await gateway.held_ping(session, "carol", "ABSORB0001")
    state = gateway.gateway.state
    key = AssociationKey("ABSORB0001", "carol")
    changes = block(state.snapshot, key, note="elsewhere", actor="t", now=state.clock())
    await state.store.apply(changes)  # written by "another node"
    writes: list[object] = []
    original = state.store.apply

    async def count(batch):  # type: ignore[no-untyped-def]
        writes.append(batch)
        await original(batch)

    state.store.apply = count  # type: ignore[method-assign]
    done = state.absorb(changes)
    r = await asyncio.wait_for(ping, 30)
    assert (done.ended, done.absorbed.revoked[0][0]) == (1, key)
    assert (r.status, r.text("Status")) == (200, "129")
    assert writes == []
    row = state.snapshot.get(key)
    assert row is not None and "MANUAL" in row.reasons  # the refreshed decision, in memory


async def test_answer_first_marks_the_held_pings_and_answers_them_when_asked(
    gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    """A commit with ``answer_first`` (an admin's bulk action) leaves the
    refused polls held, marked, until the caller has answered its own request
    and calls ``answer_held``."""
    _, ping = await gateway.held_ping(session, "alice", "FIRST0001")
    state = gateway.gateway.state
    key = AssociationKey("FIRST0001", "alice")
    committed = await state.commit(
        lambda snap, now: block(snap, key, note="x", actor="t", now=now), answer_first=True
    )
    assert committed.ended == 1 and [p.key for p in committed.held] == [key]
    poll = committed.held[0]  # marked, its task not cancelled: nothing will answer it yet
    assert poll.revoked_by is not None and not poll.ended and poll.task.cancelling() == 0
    state.answer_held(committed)
    state.answer_held(committed)  # idempotent
    r = await asyncio.wait_for(ping, 30)
    assert (r.status, r.text("Status")) == (200, "129")


async def test_answer_first_polls_are_answered_even_if_the_caller_never_asks(
    gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    _, ping = await gateway.held_ping(session, "bob", "FIRST0002")
    state = gateway.gateway.state
    key = AssociationKey("FIRST0002", "bob")
    committed = await state.commit(
        lambda snap, now: block(snap, key, note="x", actor="t", now=now), answer_first=True
    )
    assert committed.ended == 1
    r = await asyncio.wait_for(ping, 30)  # ANSWER_FIRST_FALLBACK_SECONDS later
    assert r.text("Status") == "129"


async def test_a_bulk_block_answers_the_admin_then_every_held_ping(
    gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    pings = [(await gateway.held_ping(session, "shared", f"BULKF{i:04d}"))[1] for i in range(3)]
    body = {"filter": {"user": "shared"}, "note": "bulk", "dry_run": False}
    async with session.post(
        f"{gateway.admin_url}/api/associations/actions/block",
        json=body,
        headers={"Authorization": f"Bearer {gateway.gateway.admin_token}"},
    ) as resp:
        answer = await resp.json()
    assert resp.status == 200 and answer["polls_ended"] == 3
    for ping in pings:
        r = await asyncio.wait_for(ping, 30)
        assert r.text("Status") == "129"
    assert gateway.gateway.state.longpolls.count() == 0


async def test_shutdown_answers_polls_marked_by_an_answer_first_commit(
    gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    """Polls marked but not yet answered when the gateway stops get their
    revocation (not "ask again"), each cancelled once."""
    _, marked = await gateway.held_ping(session, "alice", "FIRST0003")
    _, other = await gateway.held_ping(session, "bob", "FIRST0004")
    state = gateway.gateway.state
    key = AssociationKey("FIRST0003", "alice")
    await state.commit(
        lambda snap, now: block(snap, key, note="x", actor="t", now=now), answer_first=True
    )
    assert state.longpolls.cancel_all() == 2
    r = await asyncio.wait_for(marked, 30)
    assert r.text("Status") == "129"
    r = await asyncio.wait_for(other, 30)
    assert r.status == 200 and r.text("Status") != "129"


async def test_a_revocation_writes_every_answer_before_any_task_accounts_for_one(
    gateway: DemoGateway, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Answer first, account after (``longpolls.py``): the three devices'
    answers are written in one pass, then each task accounts for the answer
    it finds written (metrics, the access line), and writes nothing more."""
    from sentry.proxy import forwarding

    events: list[tuple[str, str]] = []
    state = gateway.gateway.state
    answer_now = state.longpolls.answer_now
    assert answer_now is not None

    def answering(poll: HeldPoll[AssociationKey, Decision]) -> None:
        assert answer_now is not None
        answer_now(poll)
        events.append(("written" if poll.answer is not None else "not written", poll.key.user))

    original = forwarding._revoked

    def accounting(*args: Any) -> web.Response:
        events.append(("accounted", "written" if args[-1] is not None else "built"))
        return original(*args)

    monkeypatch.setattr(state.longpolls, "answer_now", answering)
    monkeypatch.setattr(forwarding, "_revoked", accounting)
    users = ("alice", "bob", "carol")
    pings = [(await gateway.held_ping(session, u, f"ORDER{i:04d}"))[1] for i, u in enumerate(users)]
    with capture_logs() as logs:
        keys = [AssociationKey(f"ORDER{i:04d}", u) for i, u in enumerate(users)]
        committed = await state.commit(
            lambda snap, now: [
                c for k in keys for c in block(snap, k, note="x", actor="t", now=now)
            ],
            answer_first=True,
        )
        state.answer_held(committed)
        answers = [await asyncio.wait_for(p, 30) for p in pings]
    assert [(r.status, r.text("Status")) for r in answers] == [(200, "129")] * 3
    assert sorted(events[:3]) == [("written", u) for u in users]
    assert events[3:] == [("accounted", "written")] * 3
    lines = [e for e in logs if e["event"] == "request" and e.get("command") == "Ping"]
    assert [(e["status"], e["revoked"]) for e in lines] == [(200, True)] * 3
    histogram = "sentry_revocation_seconds_count"
    assert gateway.registry.get_sample_value(histogram) == 3  # observed once each
    # each connection carried exactly one answer: the next request on it is served
    client = EasTestClient(session, f"{gateway.url}/Microsoft-Server-ActiveSync", "dave", "secret")
    assert (await client.options()).status == 200


async def test_when_answering_at_once_fails_the_task_answers(
    gateway: DemoGateway, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(poll: HeldPoll[AssociationKey, Decision]) -> None:
        raise RuntimeError("no answer now")

    state = gateway.gateway.state
    monkeypatch.setattr(state.longpolls, "answer_now", broken)
    _, ping = await gateway.held_ping(session, "alice", "FALLBACK01")
    key = AssociationKey("FALLBACK01", "alice")
    with capture_logs() as logs:
        await state.apply(block(state.snapshot, key, note="x", actor="t", now=state.clock()))
        r = await asyncio.wait_for(ping, 30)
    assert (r.status, r.text("Status")) == (200, "129")
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["answer_now_failed"]
