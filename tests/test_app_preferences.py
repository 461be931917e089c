"""The composition root (app.py): preferences an administrator set survive restarts,
per preference and even at the default, and the start log says where each
value comes from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
from structlog.testing import capture_logs

from sentry.testing.gateway import DEMO_ROUTING, demo_gateway, demo_pools


async def _put(gw: Any, body: dict[str, Any]) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {gw.gateway.admin_token}"}
    url = f"{gw.admin_url}/api/preferences"
    async with aiohttp.ClientSession() as s, s.put(url, json=body, headers=headers) as r:
        assert r.status == 200, await r.text()
        answer: dict[str, Any] = await r.json()
        return answer


def _start_event(logs: list[dict[str, Any]]) -> dict[str, Any]:
    (event,) = [e for e in logs if e.get("event") == "preferences"]
    return event


async def test_admin_preferences_win_over_the_file_across_restarts(tmp_path: Path) -> None:
    file = {"refusal_style": "http403", "max_devices_per_mailbox": 5}
    with capture_logs() as logs:
        async with demo_gateway(
            tmp_path, demo_pools(), routing=DEMO_ROUTING, preferences=file
        ) as gw:
            assert gw.gateway.state.snapshot.prefs.max_devices_per_mailbox == 5
            answer = await _put(gw, {"max_devices_per_mailbox": None, "note": "no limit"})
            assert answer["sources"]["max_devices_per_mailbox"] == "admin"
    first = _start_event(logs)
    assert first["max_devices_per_mailbox"] == {"value": 5, "source": "file"}
    assert first["auto_block_unregistered"] == {"value": False, "source": "default"}
    # Restart with the same file: the admin's None (the built-in default) stays;
    # the preference the admin did not set still comes from the file.
    with capture_logs() as logs:
        async with demo_gateway(
            tmp_path, demo_pools(), routing=DEMO_ROUTING, preferences=file
        ) as gw:
            prefs = gw.gateway.state.snapshot.prefs
            assert prefs.max_devices_per_mailbox is None
            assert prefs.refusal_style == "http403"
    event = _start_event(logs)
    assert event["max_devices_per_mailbox"] == {"value": None, "source": "admin"}
    assert event["refusal_style"] == {"value": "http403", "source": "file"}
    # The file changes: what the admin did not set follows it; the admin's value stays.
    changed = {
        "refusal_style": "status",
        "max_devices_per_mailbox": 2,
        "auto_block_unregistered": True,
    }
    async with demo_gateway(
        tmp_path, demo_pools(), routing=DEMO_ROUTING, preferences=changed
    ) as gw:
        prefs = gw.gateway.state.snapshot.prefs
        assert (prefs.refusal_style, prefs.max_devices_per_mailbox) == ("status", None)
        assert prefs.auto_block_unregistered
        answer = await _put(gw, {"use_file": ["max_devices_per_mailbox"], "note": "back"})
        assert answer["max_devices_per_mailbox"] == 2
        assert answer["sources"]["max_devices_per_mailbox"] == "file"
    async with demo_gateway(
        tmp_path, demo_pools(), routing=DEMO_ROUTING, preferences=changed
    ) as gw:
        assert gw.gateway.state.snapshot.prefs.max_devices_per_mailbox == 2


async def test_an_admin_reverting_every_preference_to_the_defaults_is_not_undone(
    tmp_path: Path,
) -> None:
    # The file turns auto-block on; the admin turns it off again, which makes the
    # stored preferences equal the built-in defaults (a restart used to re-apply
    # the file then).
    file = {"auto_block_unregistered": True}
    async with demo_gateway(tmp_path, demo_pools(), routing=DEMO_ROUTING, preferences=file) as gw:
        await _put(gw, {"auto_block_unregistered": False, "note": "too strict"})
    async with demo_gateway(tmp_path, demo_pools(), routing=DEMO_ROUTING, preferences=file) as gw:
        assert gw.gateway.state.snapshot.prefs.auto_block_unregistered is False
