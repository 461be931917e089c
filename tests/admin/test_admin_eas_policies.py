"""ActiveSync policies through the admin API and CLI: validated settings with
bounds, assignment and revert, the 409 for deleting an assigned policy, the
per-device resolution view, and the audit entries."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from admin_support import Api
from structlog.testing import capture_logs

from sentry.cli import main
from sentry.testing.eas_client import EasTestClient
from sentry.testing.gateway import DemoGateway

STRICT = {"DevicePasswordEnabled": True, "MinDevicePasswordLength": 6, "MaxAttachmentSize": 1024}


async def test_policy_crud_bounds_and_assignments(
    api: Api, gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    made = await api.ok("PUT", "/api/eas-policies/strict", {"settings": STRICT, "note": "ISO"})
    assert made["settings"] == STRICT and made["allow_non_provisionable"] is False
    status, body = await api.put(
        "/api/eas-policies/bad", {"settings": {"MinDevicePasswordLength": 40}}
    )
    assert status == 400
    assert body["error"] == "MinDevicePasswordLength must be an integer from 1 to 16, got 40"
    status, body = await api.put("/api/eas-policies/bad", {"settings": {"NoSuchSetting": 1}})
    assert status == 400 and "unknown policy setting 'NoSuchSetting'" in body["error"]
    status, body = await api.put("/api/eas-policies/bad", {"settings": {"AllowCamera": "no"}})
    assert (status, body["fields"]) == (400, {"settings": "values must be integers or booleans"})
    status, body = await api.put("/api/eas-policies/bad", {"settings": {"MaxCalendarAgeFilter": 2}})
    assert status == 400 and "one of 0, 4, 5, 6, 7" in body["error"]
    assigned = await api.ok(
        "PUT",
        "/api/eas-policy-assignments",
        {"scope": "user", "target": "alice", "policy": "strict"},
    )
    assert assigned["users"] == {"alice": "strict"}
    status, _ = await api.put(
        "/api/eas-policy-assignments", {"scope": "user", "target": "alice", "policy": "nope"}
    )
    assert status == 409
    status, body = await api.delete("/api/eas-policies/strict", {"note": "gone"})
    assert status == 409 and "assigned" in body["error"]
    phone = EasTestClient(
        session, f"{gateway.url}/Microsoft-Server-ActiveSync", "alice", "secret",
        device_id="ADMPOL0001",
    )  # fmt: skip
    await phone.provision()
    seen = await api.ok("GET", "/api/eas-policies/devices/ADMPOL0001/alice")
    assert (seen["policy"], seen["source"]) == ("strict", "user:alice")
    assert seen["provisioned"]["acknowledged"] is True
    reverted = await api.ok(
        "PUT", "/api/eas-policy-assignments", {"scope": "user", "target": "alice", "policy": None}
    )
    assert reverted["users"] == {}
    await api.ok("DELETE", "/api/eas-policies/strict", {"note": "gone"})
    audit = await api.ok("GET", "/api/audit?target=eas_policy")
    actions = [e["action"] for e in audit["items"]]
    assert actions == [
        "delete_eas_policy",
        "revert_eas_policy",
        "assign_eas_policy",
        "put_eas_policy",
    ]


async def test_cli_policies(
    gateway: DemoGateway, session: aiohttp.ClientSession, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = ["--url", gateway.admin_url, "--token", gateway.gateway.admin_token]

    async def run(*argv: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(main, ["admin", "policies", *argv, *flags])
        out, err = capsys.readouterr()
        return code, out, err

    with capture_logs():
        code, out, _ = await run(
            "set", "strict", "--setting", "MinDevicePasswordLength=6",
            "--setting", "AllowCamera=false", "--note", "ISO",
        )  # fmt: skip
        assert code == 0 and "MinDevicePasswordLength = 6" in out and "AllowCamera = false" in out
        code, out, err = await run("set", "bad", "--setting", "AllowCamera=3")
        assert code == 1 and "AllowCamera" in err
        code, out, _ = await run("assign", "strict", "--default", "--note", "all phones")
        assert code == 0 and "default: strict" in out
        url = f"{gateway.url}/Microsoft-Server-ActiveSync"
        await EasTestClient(session, url, "bob", "secret", device_id="CLIPOL0001").provision()
        code, out, _ = await run("device", "CLIPOL0001", "bob")
        assert code == 0 and "strict (from default)" in out
        code, out, _ = await run("list", "--json")
        assert json.loads(out)["assignments"]["default"] == "strict"
        code, out, _ = await run("revert", "--default")
        assert code == 0 and "default: (the backend)" in out
