"""Overrides through the admin API, CLI and on the wire: reset to automatic,
pre-approval before the first request, ``compliance_overrides_allow``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aiohttp
import pytest
from admin_support import Api, device, folder_sync_status
from structlog.testing import capture_logs

from sentry.cli import main
from sentry.testing.gateway import DemoGateway


async def test_preapproved_pair_is_listed_then_found_by_the_first_request(
    api: Api, gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    await api.ok("PUT", "/api/preferences", {"auto_block_unregistered": True, "note": "lock"})
    answer = await api.ok(
        "POST", "/api/associations/newphone01/BOB/preapprove", {"note": "starter"}
    )
    row = answer["association"]
    # (no realm configured here: bob is a bare principal, without a domain)
    assert (row["device_id"], row["user"], row["domain"]) == ("NEWPHONE01", "bob", None)
    assert row["verified"] is False  # until the backend accepts the device
    assert row["never_seen"] is True and row["last_seen"] is None and row["state"] == "allowed"
    assert row["override"]["pre_approved"] is True and row["override"]["note"] == "starter"
    page = await api.ok("GET", "/api/associations?never_seen=true")
    assert [(r["device_id"], r["user"]) for r in page["items"]] == [("NEWPHONE01", "bob")]
    assert gateway.backend("exchange").stats.total == 0  # nothing reached a backend
    # The device's first request finds the row: allowed despite auto-block.
    assert await folder_sync_status(device(gateway, session, "bob", "NEWPHONE01")) != "129"
    detail = await api.ok("GET", "/api/associations/NEWPHONE01/bob")
    assert detail["never_seen"] is False and detail["device_type"] == "TestPhone"
    kinds = ["admin", "first_request", "verified", "established"]  # the backend accepted it
    assert [e["kind"] for e in detail["history"]] == kinds
    assert (await api.ok("GET", "/api/associations?never_seen=true"))["total"] == 0
    # A second pre-approval of the same pair is a conflict (use allow).
    status, body = await api.post("/api/associations/NEWPHONE01/bob/preapprove", {"note": "again"})
    assert status == 409 and "preapprove" in body["error"]


async def test_preapproval_refusals(
    api: Api, gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    status, body = await api.post("/api/associations/validate/bob/preapprove", {"note": "x"})
    assert status == 400 and "throw-away" in body["error"]
    status, body = await api.post("/api/associations/NEWPHONE02/bob/preapprove", {})
    assert status == 400 and body["fields"] == {"note": "required"}
    await api.ok("POST", "/api/associations/NEWPHONE02/bob/preapprove", {"note": "x"})
    await device(gateway, session, "bob", "NEWPHONE02").provision()  # accepted: exchange
    status, body = await api.post(  # carol routes to the gmail pool: never on this device
        "/api/associations/NEWPHONE02/carol/preapprove", {"note": "x"}
    )
    assert status == 409 and "MIXED_BACKEND" in body["error"]
    audit = await api.ok("GET", "/api/audit?limit=1")
    assert audit["items"][0]["action"] == "preapprove"


async def test_reset_to_automatic_ends_the_held_ping_and_is_audited(
    api: Api, gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    phone = device(gateway, session, "alice", "RESET0001")
    await phone.provision()
    await api.ok("POST", "/api/devices", {"id": "m1", "owner": "alice"}, status=201)
    row = "/api/associations/RESET0001/alice"
    await api.ok("POST", row + "/link", {"note": "hers", "device": "m1"})
    await api.ok("PUT", "/api/devices/m1/compliance", {"violations": ["passcode"]})
    assert await folder_sync_status(phone) == "129"
    await api.ok("POST", row + "/allow", {"note": "exception"})
    assert await folder_sync_status(phone) == "1"
    status, body = await api.post(row + "/reset", {})
    assert status == 400 and body["fields"] == {"note": "required"}
    answer = await api.ok("POST", row + "/reset", {"note": "exception over"})
    item = answer["association"]
    assert (item["admin_state"], item["override"], item["state"]) == ("none", None, "blocked")
    assert item["reasons"] == ["COMPLIANCE"]
    assert await folder_sync_status(phone) == "129"
    entry = (await api.ok("GET", "/api/audit?limit=1"))["items"][0]
    assert (entry["action"], entry["note"], entry["before"]["state"]) == (
        "reset",
        "exception over",
        "allowed",
    )
    await api.ok("POST", row + "/wipe", {"note": "lost"})
    status, body = await api.post(row + "/reset", {"note": "x"})
    assert status == 409 and "wipe_pending" in body["error"]


async def test_compliance_overrides_allow_preference(
    api: Api, gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    phone = device(gateway, session, "bob", "COMPL0001")
    await phone.provision()
    body = {"id": "m2", "owner": "bob", "eas_device_ids": ["COMPL0001"]}
    await api.ok("POST", "/api/devices", body, status=201)
    await api.ok("PUT", "/api/devices/m2/compliance", {"violations": ["compromised"]})
    await api.ok("POST", "/api/associations/COMPL0001/bob/allow", {"note": "exception"})
    assert await folder_sync_status(phone) == "1"  # Allow wins (Ivanti's behaviour)
    prefs = await api.ok("PUT", "/api/preferences", {"compliance_overrides_allow": True})
    assert prefs["compliance_overrides_allow"] is True
    assert await folder_sync_status(phone) == "129"  # compliance wins now
    row = await api.ok("GET", "/api/associations/COMPL0001/bob")
    assert row["reasons"] == ["MANUAL", "COMPLIANCE"] and row["state"] == "blocked"


# --- the CLI ----------------------------------------------------------------------------


class Cli:
    def __init__(self, gw: DemoGateway, capsys: pytest.CaptureFixture[str]) -> None:
        self.flags = [
            "--url",
            gw.admin_url,
            f"--token={gw.gateway.admin_token}",
        ]  # may start with -
        self.capsys = capsys

    async def run(self, *argv: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(main, ["admin", *argv, *self.flags])
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture
def cli(gateway: DemoGateway, capsys: pytest.CaptureFixture[str]) -> Iterator[Cli]:
    with capture_logs():
        yield Cli(gateway, capsys)


async def test_cli_preapprove_reset_and_preference(cli: Cli) -> None:
    code, out, _ = await cli.run("preapprove", "CLIPRE1", "bob", "--note", "starter")
    assert code == 0 and "(pre-approved, never seen): allowed (reasons MANUAL)" in out
    code, out, _ = await cli.run("list", "--never-seen", "yes")
    assert code == 0 and "CLIPRE1" in out and "rows 1-1 of 1" in out
    code, out, _ = await cli.run("reset", "CLIPRE1", "bob", "--note", "no exception needed")
    assert code == 0 and out.startswith("reset: CLIPRE1 / bob")
    code, _, err = await cli.run("reset", "CLIPRE1", "bob")
    assert code == 2 and "--note" in err
    code, out, _ = await cli.run("bulk", "reset", "--user", "bob", "--note", "x", "--dry-run")
    assert out.startswith("matched 1, would change 1, skipped 0 (dry run: nothing changed)")
    code, out, _ = await cli.run("prefs", "set", "--compliance-overrides-allow", "on")
    assert code == 0 and "compliance_overrides_allow: yes" in out
    assert "compliance_overrides_allow: admin" in out  # its source
    code, out, _ = await cli.run("prefs", "set", "--use-file", "compliance_overrides_allow")
    assert code == 0 and "compliance_overrides_allow: no" in out
    code, _, err = await cli.run("prefs", "set", "--use-file", "nope")
    assert code == 1 and "use_file" in err
