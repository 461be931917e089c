"""The LDAP directory sync against a real slapd: initial sync, attribute changes that
re-resolve pushed mailboxes live, removed users, paging, TLS, bad credentials, a
directory that goes away and comes back."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest
from directory_support import Api, folder_sync_status, ldap_gateway
from structlog.testing import capture_logs

from sentry.model import AssociationKey, UserSource
from sentry.testing.eas_client import EasTestClient
from sentry.testing.gateway import DemoGateway
from sentry.testing.slapd import SIZE_LIMIT, Slapd, person_ldif

PING = (
    '<Ping xmlns="Ping"><HeartbeatInterval>600</HeartbeatInterval><Folders><Folder>'
    "<Id>1</Id><Class>Email</Class></Folder></Folders></Ping>"
)


def _client(gw: DemoGateway, session: aiohttp.ClientSession, user: str, device: str):  # type: ignore[no-untyped-def]
    url = f"{gw.url}/Microsoft-Server-ActiveSync"
    return EasTestClient(session, url, user, "secret", device_id=device)


async def test_initial_sync_then_nothing_to_do(
    slapd: Slapd, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with ldap_gateway(tmp_path, slapd) as gw:
        api = Api(gw, session)
        with capture_logs() as logs:
            report = await api.sync(note="first sync")
        assert report["added"] == ["alice@example.com", "bob@example.com", "shared@example.com"]
        assert report["counts"]["added"] == 3 and report["counts"]["errors"] == 0
        assert report["entries"] == 3 and report["server"] == slapd.ldapi_url
        assert report["actor"] == "admin" and report["duration_seconds"] >= 0
        alice = await api.ok("GET", "/api/users/a.smith@example.com")  # an alias finds her
        assert alice["principal"] == "alice@example.com" and alice["source"] == "ldap"
        assert (alice["custom1"], alice["custom2"]) == ("shared", "shared@example.com")
        assert alice["aliases"] == ["a.smith@example.com"]  # SMTP types only, not X500
        assert alice["display_name"] == "Alice Smith" and alice["missing_since"] is None
        synced = [e for e in logs if e["event"] == "directory_synced"]
        assert len(synced) == 1 and synced[0]["added"] == 3
        audit = await api.ok("GET", "/api/audit?target=directory")
        (entry,) = audit["items"]
        assert (entry["action"], entry["note"]) == ("directory_sync", "first sync")
        assert entry["after"]["counts"]["added"] == 3
        again = await api.sync()
        assert again["counts"]["unchanged"] == 3 and again["added"] == again["changed"] == []
        assert 'sentry_directory_users{source="ldap"} 3.0' in await api.metrics()
        status = await api.ok("GET", "/api/directory")
        assert status["healthy"] is True and status["users"] == {"local": 0, "ldap": 3}
        assert status["last_report"]["counts"]["unchanged"] == 3
        assert "password" not in str(status).lower().replace("bind_password_file", "")


async def test_a_custom_attribute_change_ends_a_held_ping_of_a_mailbox_no_longer_pushed(
    slapd: Slapd, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    prefs = {"auto_block_unregistered": True}
    async with ldap_gateway(tmp_path, slapd, preferences=prefs) as gw:
        api = Api(gw, session)
        await api.sync()
        await api.ok(
            "PUT",
            "/api/exchange-settings/second",
            {"user_name": "$USER_CUSTOM1$", "email": "$USER_CUSTOM2$"},
        )
        await api.ok("PUT", "/api/labels/sales", {"settings": ["second"]})
        device = {"id": "alice-phone", "owner": "alice", "eas_device_ids": ["PUSH0001"]}
        await api.ok("POST", "/api/devices", device | {"labels": ["sales"]}, status=201)
        shared = _client(gw, session, "shared", "PUSH0001")
        await shared.provision()
        assert await folder_sync_status(shared) == "1"  # pushed: linked, allowed
        state = gw.gateway.state
        ping = asyncio.ensure_future(shared.post("Ping", PING, timeout=60))
        await gw.backend("exchange").wait_held(1)
        # alice's second mailbox is now a gmail one: shared is no longer pushed, and
        # the new push cannot work on an exchange phone (flagged, not refused)
        moved = {"extensionAttribute1": ["carol@gmail.example"]}
        await asyncio.to_thread(slapd.modify, "alice", moved)
        with capture_logs() as logs:
            report = await api.sync(note="alice moved")
        assert report["changed"] == ["alice@example.com"] and report["polls_ended"] == 1
        answer = await asyncio.wait_for(ping, 5)
        assert answer.text("Status") == "129"
        row = state.snapshot.get(AssociationKey("PUSH0001", "shared@example.com"))
        assert row is not None and row.unlinked is not None and "AUTO_BLOCK" in row.reasons
        assert (await api.ok("GET", "/api/users/alice"))["custom1"] == "carol@gmail.example"
        (problem,) = report["push_problems"]
        assert (problem["device"], problem["reason"]) == ("alice-phone", "MIXED_BACKEND")
        flagged = [e for e in logs if e["event"] == "push_problems"]
        assert flagged and flagged[0]["action"] == "directory_sync"


@pytest.mark.parametrize("action", ["mark", "block", "delete", "keep"])
async def test_users_removed_from_ldap_follow_the_configured_action(
    action: str, slapd: Slapd, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with ldap_gateway(tmp_path, slapd, removed_users=action) as gw:
        api = Api(gw, session)
        await api.sync()
        bob = _client(gw, session, "bob", "GONE0001")
        await bob.provision()
        await asyncio.to_thread(slapd.delete, "bob")
        report = await api.sync(note="bob left")
        users = gw.gateway.state.snapshot.users
        row = gw.gateway.state.snapshot.get(AssociationKey("GONE0001", "bob@example.com"))
        assert row is not None  # an association is never deleted by a sync
        if action == "keep":
            assert report["removed"] == [] and report["counts"]["missing"] == 1
            assert users["bob@example.com"].missing_since is None
            return
        assert report["removed"] == ["bob@example.com"]
        if action == "delete":
            assert "bob@example.com" not in users and row.unlinked is not None
            return
        assert users["bob@example.com"].missing_since is not None
        assert users["bob@example.com"].source is UserSource.LDAP
        if action == "mark":
            assert row.override is None and await folder_sync_status(bob) == "1"
            return
        assert row.override is not None and row.override.kind == "block"
        assert (row.override.actor, row.override.note) == (
            "directory",
            "removed from the directory",
        )
        assert report["blocked"] == [{"device_id": "GONE0001", "user": "bob@example.com"}]
        assert await folder_sync_status(bob) == "129"
        await asyncio.to_thread(slapd.add_ldif, person_ldif("bob", upn="bob@example.com"))
        back = await api.sync(note="bob is back")
        assert back["returned"] == ["bob@example.com"]
        row = gw.gateway.state.snapshot.get(AssociationKey("GONE0001", "bob@example.com"))
        assert row is not None and row.override is None
        assert users["bob@example.com"].missing_since is None
        assert await folder_sync_status(bob) == "1"


async def test_a_paged_search_reads_more_entries_than_the_server_returns_at_once(
    slapd: Slapd, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    extra = "".join(person_ldif(f"p{i:02d}", upn=f"p{i:02d}@example.com") for i in range(12))
    await asyncio.to_thread(slapd.add_ldif, extra)
    async with ldap_gateway(tmp_path, slapd, page_size=4) as gw:
        report = await Api(gw, session).sync()
    assert report["entries"] == 15 > SIZE_LIMIT  # a plain search stops at SIZE_LIMIT
    assert report["pages"] == 4 and report["counts"]["added"] == 15


@pytest.mark.parametrize("transport", ["starttls", "ldaps"])
async def test_tls_is_verified_against_the_configured_ca(
    transport: str, slapd: Slapd, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    url = slapd.ldap_url if transport == "starttls" else slapd.ldaps_url
    over = {"urls": [url], "start_tls": transport == "starttls"}
    async with ldap_gateway(tmp_path / "trusted", slapd, **over) as gw:
        report = await Api(gw, session).sync()
        assert report["counts"]["added"] == 3 and report["server"] == url
    async with ldap_gateway(tmp_path / "untrusted", slapd, **over, ca_file=None) as gw:
        api = Api(gw, session)
        status, body = await api.call("POST", "/api/directory/sync", {})
        assert status == 502 and body["kind"] == "tls"
        assert "certificate" in body["error"] and gw.gateway.state.snapshot.users == {}


async def test_a_wrong_bind_password_is_a_bind_error_and_never_shown(
    slapd: Slapd, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with ldap_gateway(tmp_path, slapd) as gw:
        api = Api(gw, session)
        await api.sync()
        (tmp_path / "ldap-password").write_text("not-the-password")  # read at every sync
        with capture_logs() as logs:
            status, body = await api.call("POST", "/api/directory/sync", {})
        assert status == 502 and body["kind"] == "bind" and "invalidCredentials" in body["error"]
        assert len(gw.gateway.state.snapshot.users) == 3  # the last sync stays
        text = str(logs) + str(body) + str(await api.ok("GET", "/api/directory"))
        assert "not-the-password" not in text and slapd.password not in text
        metrics = await api.metrics()
        assert 'sentry_directory_sync_errors_total{kind="bind"} 1.0' in metrics


async def test_an_unreachable_directory_keeps_the_last_sync_and_says_so(
    slapd: Slapd, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with ldap_gateway(tmp_path, slapd) as gw:
        api = Api(gw, session)
        await api.sync()
        success = gw.gateway.directory.status.last_success_at
        await slapd.stop()
        with capture_logs() as logs:
            for _ in range(2):
                status, body = await api.call("POST", "/api/directory/sync", {})
                assert status == 502 and body["kind"] == "connect"
        assert [e["event"] for e in logs if e["event"].startswith("directory_")] == [
            "directory_sync_failed"  # one event per change of state, not per attempt
        ]
        assert len(gw.gateway.state.snapshot.users) == 3
        metrics = await api.metrics()
        assert 'sentry_directory_sync_errors_total{kind="connect"} 2.0' in metrics
        assert "sentry_directory_up 0.0" in metrics
        (line,) = [
            x for x in metrics.splitlines() if x.startswith("sentry_directory_last_success_")
        ]
        assert float(line.split()[1]) == pytest.approx(success)
        async with session.get(gw.admin_url + "/readyz") as resp:
            ready = await resp.json()
        assert resp.status == 200 and ready["status"] == "ready"  # decided from the last sync
        (note,) = ready["notes"]
        assert "directory ldap failing since" in note and "connect" in note
        status_view = await api.ok("GET", "/api/directory")
        assert status_view["healthy"] is False and status_view["last_error"]["kind"] == "connect"
        await slapd.restart()
        with capture_logs() as logs:
            report = await api.sync()
        assert report["counts"]["unchanged"] == 3
        assert "directory_recovered" in [e["event"] for e in logs]
        async with session.get(gw.admin_url + "/readyz") as resp:
            assert "notes" not in await resp.json()
        assert "sentry_directory_up 1.0" in await api.metrics()


async def test_the_schedule_syncs_at_start(
    slapd: Slapd, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with ldap_gateway(tmp_path, slapd, sync_interval_seconds=3600) as gw:
        sync = gw.gateway.directory
        assert sync is not None
        await sync.wait_attempts(1, timeout=30)
        assert sync.status.successes == 1 and len(gw.gateway.state.snapshot.users) == 3
        status = await Api(gw, session).ok("GET", "/api/directory")
        assert status["next_sync_at"] is not None
        assert status["last_report"]["actor"] == "directory"


async def test_ldap_users_are_the_sync_s_and_local_users_are_never_touched(
    slapd: Slapd, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with ldap_gateway(tmp_path, slapd) as gw:
        api = Api(gw, session)
        await api.sync()
        status, body = await api.call("PUT", "/api/users/bob", {"source": "ldap", "custom1": "x"})
        assert status == 409 and "directory sync" in body["error"]
        status, body = await api.call("DELETE", "/api/users/bob", {"note": "x"})
        assert status == 409
        status, body = await api.call("PUT", "/api/users/zoe", {"source": "ldap"})
        assert status == 409
        taken = await api.ok("PUT", "/api/users/bob", {"source": "local", "custom1": "mine"})
        assert taken["source"] == "local"
        report = await api.sync()
        assert [e["principal"] for e in report["errors"]] == ["bob@example.com"]
        assert "local user" in report["errors"][0]["problem"]
        assert report["removed"] == []
        bob = gw.gateway.state.snapshot.users["bob@example.com"]
        assert (bob.source, bob.custom1) == (UserSource.LOCAL, "mine")


async def test_a_mass_removal_is_refused_unless_allowed(
    slapd: Slapd, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    many = "".join(person_ldif(f"m{i:02d}", upn=f"m{i:02d}@example.com") for i in range(12))
    await asyncio.to_thread(slapd.add_ldif, many)
    async with ldap_gateway(tmp_path, slapd, removed_users="delete") as gw:
        api = Api(gw, session)
        await api.sync()
        for i in range(12):
            await asyncio.to_thread(slapd.delete, f"m{i:02d}")
        status, body = await api.call("POST", "/api/directory/sync", {})
        assert status == 409 and "would remove 12 of 15" in body["error"]
        assert len(gw.gateway.state.snapshot.users) == 15
        report = await api.sync(allow_mass_removal=True, note="reorganisation")
        assert report["counts"]["removed"] == 12
        assert len(gw.gateway.state.snapshot.users) == 3


async def test_the_cli_syncs_and_shows_the_status(
    slapd: Slapd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sentry.cli import main

    async with ldap_gateway(tmp_path, slapd) as gw:
        target = ["--url", gw.admin_url, "--token", gw.gateway.admin_token]
        with capture_logs():
            code = await asyncio.to_thread(
                main, ["admin", "directory", "sync", "--note", "n", *target]
            )
            out, _ = capsys.readouterr()
            assert code == 0 and "added: alice@example.com" in out and "entries: 3" in out
            code = await asyncio.to_thread(main, ["admin", "directory", "status", *target])
            out, _ = capsys.readouterr()
            assert code == 0 and "healthy: yes" in out and "last report:" in out
            await slapd.stop()
            code = await asyncio.to_thread(main, ["admin", "directory", "sync", *target])
            _, err = capsys.readouterr()
            assert code == 1 and "connect" in err


async def test_a_sync_does_not_hold_the_event_loop(
    slapd: Slapd, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """The read runs in a worker thread: the loop keeps turning meanwhile (a
    positive signal: a ticker advances while the sync is in flight)."""
    async with ldap_gateway(tmp_path, slapd) as gw:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.ensure_future(ticker())
        started = time.monotonic()
        await gw.gateway.directory.sync()
        task.cancel()
        assert ticks > 1 and time.monotonic() >= started
