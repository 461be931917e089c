"""Compliance violations through the API, the CLI and the export: a vocabulary the
API validates (the allowed kinds in the OpenAPI document), a detail per kind, and
a ``violation`` filter on the association list."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest
from admin_support import Api, device
from structlog.testing import capture_logs

from sentry.cli import main
from sentry.model import ViolationKind
from sentry.testing.gateway import DemoGateway

KINDS = [k.value for k in ViolationKind]


async def _enrol(api: Api, gw: DemoGateway, session: aiohttp.ClientSession) -> None:
    await api.ok(
        "POST", "/api/devices", {"id": "ph1", "owner": "alice", "eas_device_ids": ["C1"]}, 201
    )
    await api.ok(
        "POST", "/api/devices", {"id": "ph2", "owner": "bob", "eas_device_ids": ["C2"]}, 201
    )
    await device(gw, session, "alice", "C1").provision()
    await device(gw, session, "bob", "C2").provision()


async def test_kinds_are_validated_and_details_kept(
    api: Api, gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    await _enrol(api, gateway, session)
    status, body = await api.put("/api/devices/ph1/compliance", {"violations": ["jailbroken"]})
    assert (
        status == 400 and "'jailbroken' is not one of: compromised" in body["fields"]["violations"]
    )
    assert all(k in body["fields"]["violations"] for k in KINDS)
    status, body = await api.put(
        "/api/devices/ph1/compliance", {"violations": [], "details": {"bogus": "x"}}
    )
    assert (status, body["fields"]) == (400, {"details.bogus": "unknown field"})
    answer = await api.ok(
        "PUT",
        "/api/devices/ph1/compliance",
        {
            "violations": ["os_version", " passcode "],
            "details": {"os_version": " iOS 15.1, below 16.0 ", "app_policy": "TikTok installed"},
            "note": "EPMM compliance check",
        },
    )
    d = answer["device"]
    assert d["compliant"] is False
    assert d["violations"] == ["app_policy", "os_version", "passcode"]
    assert d["violation_details"] == [
        {"kind": "app_policy", "detail": "TikTok installed"},
        {"kind": "os_version", "detail": "iOS 15.1, below 16.0"},
        {"kind": "passcode", "detail": ""},
    ]
    row = await api.ok("GET", "/api/associations/C1/alice")
    assert row["reasons"] == ["COMPLIANCE"]
    assert row["violations"] == ["app_policy", "os_version", "passcode"]
    audit = await api.ok("GET", "/api/audit?target=device:ph1")
    after = audit["items"][0]["after"]["violations"]
    assert {"kind": "app_policy", "detail": "TikTok installed"} in after


async def test_the_document_lists_the_vocabulary(api: Api) -> None:
    doc = await api.ok("GET", "/api/openapi.json")
    op = doc["paths"]["/api/devices/{id}/compliance"]["put"]
    body = op["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["violations"]["items"]["enum"] == KINDS
    assert sorted(body["properties"]["details"]["properties"]) == sorted(KINDS)
    assert body["properties"]["details"]["additionalProperties"] is False
    params = {p["name"]: p for p in doc["paths"]["/api/associations"]["get"]["parameters"]}
    assert params["violation"]["schema"]["enum"] == KINDS
    device_schema = doc["components"]["schemas"]["DeviceChange"]
    assert device_schema  # the answer schema exists (its fields are checked by schemathesis)


async def test_the_list_and_the_export_filter_by_violation(
    api: Api, gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    await _enrol(api, gateway, session)
    await api.ok("PUT", "/api/devices/ph1/compliance", {"violations": ["compromised"]})
    await api.ok(
        "PUT", "/api/devices/ph2/compliance", {"violations": ["passcode", "out_of_contact"]}
    )
    for kind, users in (("compromised", ["alice"]), ("passcode", ["bob"]), ("threat", [])):
        page = await api.ok("GET", f"/api/associations?violation={kind}")
        assert [r["user"] for r in page["items"]] == users, kind
        assert page["total"] == len(users)
        with_user = await api.ok("GET", f"/api/associations?violation={kind}&user=b")
        assert [r["user"] for r in with_user["items"]] == [u for u in users if "b" in u]
    status, body = await api.get("/api/associations?violation=rooted")
    assert status == 400 and "violation" in body["fields"]
    headers = {"Authorization": f"Bearer {api.token}"}
    url = api.base + "/api/associations/export?format=json&violation=out_of_contact"
    async with session.get(url, headers=headers) as resp:
        rows = json.loads(await resp.read())
    assert [(r["user"], r["violations"]) for r in rows] == [("bob", ["out_of_contact", "passcode"])]
    dry = await api.ok(
        "POST",
        "/api/associations/actions/block",
        {"filter": {"violation": "passcode"}, "note": "n", "dry_run": True},
    )
    assert dry["matched"] == 1 and dry["dry_run"] is True


async def test_the_cli_sets_details_and_filters(
    api: Api,
    gateway: DemoGateway,
    session: aiohttp.ClientSession,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    await _enrol(api, gateway, session)
    target = ["--url", gateway.admin_url, "--token", gateway.gateway.admin_token]

    async def run(*argv: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(main, ["admin", *argv, *target])
        out, err = capsys.readouterr()
        return code, out, err

    with capture_logs():
        code, out, _ = await run(
            "devices", "compliance", "ph2", "--violation", "os_version:Android 9: too old",
            "--violation", "attestation", "--note", "feed",
        )  # fmt: skip
        assert code == 0
        details = (await api.ok("GET", "/api/devices/ph2"))["violation_details"]
        assert details == [
            {"kind": "attestation", "detail": ""},
            {"kind": "os_version", "detail": "Android 9: too old"},
        ]
        code, out, err = await run("devices", "compliance", "ph2", "--violation", "rooted")
        assert code == 1 and "rooted" in err and "compromised" in err
        code, out, _ = await run("list", "--violation", "attestation", "--json")
        assert code == 0 and [r["user"] for r in json.loads(out)["items"]] == ["bob"]
        code, out, err = await run("list", "--violation", "nonsense")
        assert code == 2 and "invalid choice" in err
        dest = tmp_path / "x.csv"
        code, _, _ = await run("export", "--violation", "os_version", "--output", str(dest))
        assert code == 0
        lines = dest.read_text().splitlines()
        assert len(lines) == 2 and "attestation os_version" in lines[1]
