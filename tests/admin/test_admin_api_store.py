"""A failing store seen from outside, against a real gateway: the state files deleted,
made read-only or damaged under it. Devices get "registry unreachable" decisions,
admin changes get 503 (never a 200 that a restart would lose), ``/readyz`` says why,
the metrics and ``GET /api/store`` show it, and the operator can recover."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from admin_support import Api, device, folder_sync_status
from structlog.testing import capture_logs

from sentry.cli import main
from sentry.testing.files import CannotMakeReadOnly, damage_database, read_only
from sentry.testing.gateway import DEMO_ROUTING, DemoGateway, demo_gateway, demo_pools

FAST = {"check_interval_seconds": 0.02}


@asynccontextmanager
async def gateway_at(root: Path, **overrides: Any) -> AsyncIterator[DemoGateway]:
    async with demo_gateway(
        root, demo_pools(), routing=DEMO_ROUTING, store=FAST, **overrides
    ) as gw:
        yield gw


def api_of(gw: DemoGateway, session: aiohttp.ClientSession) -> Api:
    return Api(session, gw.admin_url, gw.gateway.admin_token)


async def readiness(api: Api, *, ready: bool) -> dict[str, Any]:
    """Wait (bounded) until ``/readyz`` says ``ready``; return its answer."""
    async with asyncio.timeout(10):
        while True:
            status, answer = await api.call("GET", "/readyz", token=None)
            if (status == 200) == ready:
                return answer
            await asyncio.sleep(0.01)


async def metric(api: Api, line_start: str) -> float:
    async with api.session.get(api.base + "/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no metric {line_start}")


def delete_state(root: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        os.remove(f"{root / 'sentry.db'}{suffix}")


async def test_deleted_state_files_refuse_admin_changes_until_recovered(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    async with gateway_at(tmp_path, preferences={"new_device_access": "block"}) as gw:
        api = api_of(gw, session)
        alice = device(gw, session, "alice", "PHONE1")
        await alice.provision()
        await device(gw, session, "bob", "PHONE2").provision()
        delete_state(tmp_path)

        status, answer = await api.post("/api/associations/PHONE2/bob/block", {"note": "lost"})
        assert status == 503, answer  # never acknowledged: a restart would lose it
        assert "deleted" in answer["error"] and "nothing was changed" in answer["error"]
        assert gw.gateway.state.snapshot.get(("PHONE2", "bob")).override is None
        problems = (await readiness(api, ready=False))["problems"]
        assert any(p.startswith("store deleted:") for p in problems), problems

        assert await folder_sync_status(alice) == "1"  # known: keeps its decision
        newcomer = device(gw, session, "shared", "PHONE3")
        assert await folder_sync_status(newcomer) == "129"  # new: new_device_access=block
        assert await metric(api, "sentry_store_healthy") == 0
        assert await metric(api, 'sentry_store_fault{kind="deleted"}') == 1
        store = await api.ok("GET", "/api/store")
        assert (store["healthy"], store["fault"], store["kind"]) == (False, "deleted", "sqlite")
        assert "/api/store/recover" in store["advice"]

        backup = tmp_path / "while-degraded.db"  # a backup still copies the open file
        headers = {"Authorization": f"Bearer {api.token}"}
        async with session.get(api.base + "/api/store/backup", headers=headers) as resp:
            assert resp.status == 200
            backup.write_bytes(await resp.read())
        with sqlite3.connect(backup) as copy:
            assert copy.execute("SELECT COUNT(*) FROM associations").fetchone() == (2,)

        recovered = await api.ok("POST", "/api/store/recover", {"note": "rm by mistake"})
        assert recovered["healthy"] is True and recovered["fault"] is None
        await readiness(api, ready=True)
        await api.ok("POST", "/api/associations/PHONE2/bob/block", {"note": "lost"})
        assert await metric(api, "sentry_store_healthy") == 1

    async with gateway_at(tmp_path) as gw:  # a restart keeps everything
        api = api_of(gw, session)
        row = await api.ok("GET", "/api/associations/PHONE2/bob")
        assert row["state"] == "blocked" and row["override"]["note"] == "lost"
        assert (await api.ok("GET", "/api/associations"))["total"] == 2
        actions = [e["action"] for e in (await api.ok("GET", "/api/audit"))["items"]]
        assert actions[:2] == ["block", "store_recover"]


async def test_new_devices_follow_new_device_access_allow_while_degraded(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    async with gateway_at(tmp_path) as gw:
        await device(gw, session, "alice", "PHONE1").provision()
        delete_state(tmp_path)
        await readiness(api_of(gw, session), ready=False)
        newcomer = device(gw, session, "bob", "PHONE2")
        await newcomer.provision()
        assert await folder_sync_status(newcomer) == "1"
        status, _ = await api_of(gw, session).get("/api/associations/PHONE2/bob")
        assert status == 404  # decided, not recorded: nothing durable could be written


async def test_read_only_state_files_recover_by_themselves(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    async with gateway_at(tmp_path) as gw:
        api = api_of(gw, session)
        await device(gw, session, "bob", "PHONE2").provision()
        db = tmp_path / "sentry.db"
        try:
            with read_only(db, Path(f"{db}-wal")):
                problems = (await readiness(api, ready=False))["problems"]
                assert any(p.startswith("store read_only:") for p in problems), problems
                status, answer = await api.post(
                    "/api/associations/PHONE2/bob/block", {"note": "lost"}
                )
                assert status == 503 and "read_only" in answer["error"], answer
                assert "retried every" in answer["error"]
        except CannotMakeReadOnly as exc:
            pytest.skip(str(exc))
        await readiness(api, ready=True)
        await api.ok("POST", "/api/associations/PHONE2/bob/block", {"note": "lost"})
        assert await metric(api, 'sentry_store_errors_total{kind="read_only"}') >= 1


async def test_a_damaged_database_answers_503_not_500(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    async with gateway_at(tmp_path) as gw:
        api = api_of(gw, session)
        for n in range(12):
            await device(gw, session, "alice", f"PHONE{n}").provision()
        damage_database(tmp_path / "sentry.db")
        status, answer = await api.get("/api/associations")
        assert status == 503 and "corrupt" in answer["error"], answer
        problems = (await readiness(api, ready=False))["problems"]
        assert any(p.startswith("store corrupt:") for p in problems), problems
        status, answer = await api.post("/api/store/recover", {})
        assert status == 409, answer  # damage is not something recover can undo


async def test_admin_cli_store_show_and_recover(
    tmp_path: Path, session: aiohttp.ClientSession, capsys: pytest.CaptureFixture[str]
) -> None:
    async with gateway_at(tmp_path) as gw:
        flags = ["--url", gw.admin_url, "--token", gw.gateway.admin_token]

        async def cli(*argv: str) -> tuple[int, str, str]:
            code = await asyncio.to_thread(main, ["admin", "store", *argv, *flags])
            out, err = capsys.readouterr()
            return code, out, err

        with capture_logs():
            code, out, _ = await cli("show")
            assert code == 0 and "healthy: yes" in out
            code, _, err = await cli("recover")
            assert code == 1 and "HTTP 409" in err and "deleted or replaced" in err
            delete_state(tmp_path)
            await readiness(api_of(gw, session), ready=False)
            code, out, _ = await cli("show")
            assert code == 0 and "fault: deleted" in out
            code, out, _ = await cli("recover", "--note", "restored")
            assert code == 0 and "healthy: yes" in out, out


async def test_a_state_file_others_can_read_is_reported_at_start(tmp_path: Path) -> None:
    async with gateway_at(tmp_path):
        pass
    (tmp_path / "sentry.db").chmod(0o644)  # as gateways before 0600 made it
    with capture_logs() as logs:
        async with gateway_at(tmp_path):
            pass
    loose = [e for e in logs if e["event"] == "file_mode_loose"]
    assert len(loose) == 1 and loose[0]["mode"] == "0644", loose
    assert loose[0]["fix"] == f"chmod 600 {tmp_path / 'sentry.db'}"
