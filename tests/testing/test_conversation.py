"""The scripted-conversation helper itself: requests it builds, expectations, the log."""

from __future__ import annotations

import pytest

from sentry.eas.request import Command
from sentry.model import AssociationKey, Preferences, Realm, Realms
from sentry.policy import Forward, Refuse
from sentry.store.memory import MemoryStore
from sentry.testing.conversation import Conversation, describe, req


def test_req_builds_a_parsed_request():
    request = req("CORP\\Alice", "appl1", "Ping", device_type="iPad", version="14.1")
    assert request.command is Command.Ping
    assert (request.user.key, request.user.domain, request.user.raw) == (
        "corp\\alice",
        "corp",
        "CORP\\Alice",
    )
    realms = Realms((Realm("corp.example", netbios=frozenset({"CORP"})),))
    assert req("CORP\\Alice", "appl1", realms=realms).user.key == "alice@corp.example"
    assert (request.device_id, request.device_id_raw) == ("APPL1", "appl1")
    assert (request.device_type, request.protocol_version) == ("iPad", "14.1")
    assert not request.is_throwaway_device
    assert req("alice", "validate").is_throwaway_device


def test_expectations_pass_and_chain():
    conv = Conversation()
    reply = (
        conv.request("alice", "DEV1").expect_forward("exchange").expect_unlinked("device_unknown")
    )
    assert isinstance(reply.decision, Forward)
    conv.request("alice", "DEV1").expect_touch_only()


def test_a_failed_expectation_prints_the_transcript():
    conv = Conversation(prefs=Preferences(auto_block_unregistered=True))
    conv.request("alice", "DEV1")
    with pytest.raises(AssertionError) as caught:
        conv.request("alice", "DEV1").expect_forward()
    text = str(caught.value)
    assert "got Refuse 129 [AUTO_BLOCK]" in text
    assert text.count("alice@DEV1 Sync -> Refuse 129 [AUTO_BLOCK]") == 3  # line + 2 in transcript


def test_expect_refuse_checks_status_and_exact_reasons():
    conv = Conversation(prefs=Preferences(auto_block_unregistered=True))
    reply = conv.request("alice", "DEV1")
    reply.expect_refuse(129).expect_refuse(129, reasons={"AUTO_BLOCK"})
    with pytest.raises(AssertionError):
        reply.expect_refuse(177)
    with pytest.raises(AssertionError):
        reply.expect_refuse(129, reasons={"AUTO_BLOCK", "COMPLIANCE"})
    assert isinstance(reply.decision, Refuse)
    assert describe(reply.decision) == "Refuse 129 [AUTO_BLOCK]"


async def test_the_log_replays_into_a_store():
    conv = Conversation()
    conv.request("alice", "DEV1")
    conv.block("alice", "DEV1", note="n")
    store = MemoryStore()
    for changes in conv.log:
        await store.apply(changes)
    assert await store.load() == conv.snapshot
    assert conv.row("alice", "DEV1") == conv.snapshot.get(AssociationKey("DEV1", "alice"))
