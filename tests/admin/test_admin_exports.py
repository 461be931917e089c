"""Streamed exports and backups against a running gateway: every page, the list's
filters, CSV that a spreadsheet cannot turn into a formula, and backups that are
consistent while admin writes go on."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from admin_support import Api, device
from structlog.testing import capture_logs

from sentry.admin import exports
from sentry.cli import main
from sentry.store.sqlite import SqliteStore
from sentry.testing.gateway import DemoGateway, demo_gateway


async def _download(api: Api, path: str) -> tuple[int, dict[str, str], bytes]:
    headers = {"Authorization": f"Bearer {api.token}"}
    async with api.session.get(api.base + path, headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def _cli(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


def _target(gw: DemoGateway) -> list[str]:
    return ["--url", gw.admin_url, "--token", gw.gateway.admin_token]


async def _seed(gw: DemoGateway, session: aiohttp.ClientSession, count: int) -> None:
    await asyncio.gather(
        *(device(gw, session, "bob", f"EXP{i:04d}").provision() for i in range(count))
    )
    await device(gw, session, "alice", "EXPALICE", device_type="=HYPERLINK(1)").provision()


async def test_export_streams_every_row_with_the_list_filters(
    api: Api, gateway: DemoGateway, session: aiohttp.ClientSession, monkeypatch: Any
) -> None:
    monkeypatch.setattr(exports, "CHUNK", 7)  # several chunks even for a few rows
    await _seed(gateway, session, 20)
    await api.ok("POST", "/api/associations/EXP0003/bob/block", {"note": "lost"})
    with capture_logs() as logs:
        status, headers, body = await _download(api, "/api/associations/export?format=json")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert headers["Content-Disposition"].startswith('attachment; filename="associations-')
    rows = json.loads(body)
    page = await api.ok("GET", "/api/associations?limit=1000")
    assert len(rows) == 21 and [_no_seen(r) for r in rows] == [_no_seen(r) for r in page["items"]]
    assert next(e for e in logs if e["event"] == "admin_export")["rows"] == 21
    status, headers, body = await _download(
        api, "/api/associations/export?format=csv&user=bob&state=blocked"
    )
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(body.decode())))
    assert [(r["device_id"], r["state"], r["override"]) for r in table] == [
        ("EXP0003", "blocked", "block")
    ]
    assert table[0]["override_note"] == "lost" and table[0]["reasons"] == "MANUAL"


def _no_seen(row: dict[str, Any]) -> dict[str, Any]:
    """A row without last_seen (the export reads the snapshot, which has the
    last-seen times not yet flushed to the store the list page reads)."""
    return {k: v for k, v in row.items() if k != "last_seen"}


async def test_export_defuses_spreadsheet_formulas_and_checks_its_input(
    api: Api, gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    await _seed(gateway, session, 1)
    _, _, body = await _download(api, "/api/associations/export?format=csv&user=alice")
    (row,) = list(csv.DictReader(io.StringIO(body.decode())))
    assert row["device_type"] == "'=HYPERLINK(1)"
    _, _, body = await _download(api, "/api/associations/export?format=csv&user=nobody")
    assert body.decode().splitlines() == [",".join(name for name, _ in exports.CSV_COLUMNS)]
    _, _, body = await _download(api, "/api/associations/export?user=nobody")
    assert json.loads(body) == []
    status, answer = await api.get("/api/associations/export?format=xml&offset=3")
    assert status == 400 and set(answer["fields"]) == {"format", "offset"}
    assert (await api.get("/api/associations/export", token=None))[0] == 401


def test_csv_cell() -> None:
    assert [exports.csv_cell(v) for v in ("-1", "+x", "@a", "a=b", None, True, 3)] == [
        "'-1",
        "'+x",
        "'@a",
        "a=b",
        "",
        "true",
        "3",
    ]


async def test_cli_export_to_a_private_file_and_stdout(
    gateway: DemoGateway,
    session: aiohttp.ClientSession,
    tmp_path: Path,
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    await _seed(gateway, session, 3)
    out = tmp_path / "all.csv"
    with capture_logs():
        assert (
            await _cli("admin", "export", "--user", "bob", "--output", str(out), *_target(gateway))
            == 0
        )
        assert out.stat().st_mode & 0o777 == 0o600
        assert len(out.read_text().splitlines()) == 4  # header + 3 rows
        assert await _cli("admin", "export", "--output", str(out), *_target(gateway)) == 2  # exists
        capsysbinary.readouterr()
        assert await _cli("admin", "export", "--format", "json", *_target(gateway)) == 0
    assert len(json.loads(capsysbinary.readouterr().out)) == 4


async def test_backup_is_consistent_while_admin_writes_go_on(
    api: Api, gateway: DemoGateway, tmp_path: Path
) -> None:
    stop = asyncio.Event()
    written = 0

    async def writer() -> None:
        nonlocal written
        while not stop.is_set():
            await api.ok("PUT", f"/api/users/u{written:05d}", {"note": "bulk load"})
            written += 1

    task = asyncio.ensure_future(writer())
    copies = []
    try:
        async with asyncio.timeout(30):
            while written < 5:
                await asyncio.sleep(0.01)
        for i in range(4):
            status, headers, body = await _download(api, "/api/store/backup")
            assert status == 200 and headers["Content-Type"] == "application/vnd.sqlite3"
            copy = tmp_path / f"copy{i}.db"
            copy.write_bytes(body)
            copies.append(copy)
    finally:
        stop.set()
        await task
    seen = []
    for copy in copies:
        with sqlite3.connect(copy) as conn:
            assert conn.execute("PRAGMA quick_check").fetchone() == ("ok",)
        store = await SqliteStore.open(copy)
        try:
            users = set((await store.load()).users)
            audit, _ = await store.audit(0, 100_000)
        finally:
            await store.close()
        audited = {e.target.removeprefix("user:") for e in audit if e.action == "upsert_user"}
        assert users == audited  # each user and its audit entry: both or neither
        seen.append(len(users))
    assert seen == sorted(seen) and seen[-1] <= written
    leftovers = [p.name for p in gateway.gateway.root.iterdir() if p.name.startswith(".backup-")]
    assert leftovers == []  # the temporary copy is gone


async def test_backup_of_a_memory_store_is_a_conflict(tmp_path: Path) -> None:
    async with (
        demo_gateway(tmp_path, store={"kind": "memory"}) as gw,
        aiohttp.ClientSession() as http,
    ):
        headers = {"Authorization": f"Bearer {gw.gateway.admin_token}"}
        async with http.get(gw.admin_url + "/api/store/backup", headers=headers) as resp:
            assert resp.status == 409
            assert "memory" in (await resp.json())["error"]


async def test_cli_backup_checks_the_copy_and_never_overwrites(
    gateway: DemoGateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "backups" / "sentry.db"
    dest.parent.mkdir()
    with capture_logs():
        assert await _cli("store", "backup", str(dest), *_target(gateway)) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"backup of {gateway.admin_url}: {dest} (") and "schema" in out
        assert dest.stat().st_mode & 0o777 == 0o600
        assert sorted(os.listdir(dest.parent)) == ["sentry.db"]  # one self-contained file
        before = dest.read_bytes()
        assert await _cli("store", "backup", str(dest), *_target(gateway)) == 2
        assert "exists" in capsys.readouterr().err and dest.read_bytes() == before
        assert await _cli("store", "backup", str(dest), "--force", *_target(gateway)) == 0
    store = await SqliteStore.open(dest)
    await store.close()


async def test_offline_backup_of_a_stopped_gateway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async with demo_gateway(tmp_path) as gw:
        api_token = gw.gateway.admin_token
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {api_token}"}
            async with http.put(
                gw.admin_url + "/api/users/offline", json={}, headers=headers
            ) as resp:
                assert resp.status == 200
    (tmp_path / "sentry.yaml").write_text("store: {kind: sqlite, path: sentry.db}\n")
    monkeypatch.chdir(tmp_path)
    assert await _cli("store", "backup", "copy.db", "--offline", "--config", "sentry.yaml") == 0
    assert "schema" in capsys.readouterr().out
    store = await SqliteStore.open(tmp_path / "copy.db")
    try:
        assert "offline" in (await store.load()).users
    finally:
        await store.close()


async def test_offline_backup_of_postgresql_says_pg_dump(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = "store: {kind: postgresql, dsn: 'postgresql://sentry@db.example/sentry'}\n"
    (tmp_path / "sentry.yaml").write_text(config)
    monkeypatch.chdir(tmp_path)
    assert await _cli("store", "backup", "copy.db", "--offline", "--config", "sentry.yaml") == 2
    assert "pg_dump" in capsys.readouterr().err
    assert not (tmp_path / "copy.db").exists()
