"""The console's changes over HTTP: every action with its note, bulk actions
with a preview, pre-approval and preferences; each one the API's own call."""

from __future__ import annotations

import html

import pytest
from console_support import seed

from sentry.testing.console import ConsoleClient

ROW = "/associations/ALICEPHONE1/alice"


async def _api(gateway, session, path: str, **params: str):
    headers = {"Authorization": f"Bearer {gateway.gateway.admin_token}"}
    url = gateway.admin_url + path
    async with session.get(url, headers=headers, params=params) as r:
        assert r.status == 200, (path, r.status)
        return await r.json()


@pytest.fixture
async def seeded(gateway, session):
    await seed(gateway, session)
    return gateway


async def _act(console: ConsoleClient, row: str, **fields: str):
    await console.get(row)
    return await console.post(row + "/act", fields)


@pytest.mark.parametrize(
    ("action", "state", "override"),
    [
        ("allow", "allowed", "allow"),
        ("block", "blocked", "block"),
        ("wipe", "wipe_pending", "wipe"),
        ("wipe_account", "wipe_pending", "wipe"),
    ],
)
async def test_each_action_is_the_api_action_with_the_note_and_the_actor(
    seeded, session, console, action, state, override
):
    page = await _act(console, ROW, action=action, note=f"ticket {action}")
    assert page.status == 303 and page.location == ROW, page.text
    row = await _api(seeded, session, "/api" + ROW)
    assert row["state"] == state
    assert row["override"]["kind"] == override
    assert row["override"]["note"] == f"ticket {action}"
    assert row["override"]["actor"] == "Ada Admin"
    assert row["override"]["account_only"] is (action == "wipe_account")
    audit = await _api(seeded, session, "/api/audit", actor="Ada Admin")
    assert audit["items"][0]["note"] == f"ticket {action}"


async def test_reset_remove_and_link(seeded, session, console):
    await _act(console, ROW, action="block", note="lost")
    page = await _act(console, ROW, action="reset", note="found")
    assert page.status == 303
    assert (await _api(seeded, session, "/api" + ROW))["override"] is None
    headers = {"Authorization": f"Bearer {seeded.gateway.admin_token}"}
    device = {"id": "M-ALICE", "owner": "alice", "eas_device_ids": []}
    async with session.post(seeded.admin_url + "/api/devices", json=device, headers=headers) as r:
        assert r.status == 201
    page = await _act(console, ROW, action="link", note="same phone", device="M-ALICE")
    assert page.status == 303
    assert (await _api(seeded, session, "/api" + ROW))["manual_link"] == "M-ALICE"
    page = await _act(console, ROW, action="remove", note="gone")
    assert page.status == 303 and page.location == "/"
    listing = await console.get("/")
    assert "Removed ALICEPHONE1 / alice." in listing.text
    table = listing.text.split('id="associations"', 1)[1].split("</table>", 1)[0]
    assert "ALICEPHONE1" not in table and "ALICETAB3" in table


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"action": "allow", "note": "   "}, "note: must not be blank"),
        ({"action": "link", "note": "x", "device": "NO-SUCH"}, "no managed device"),
        ({"action": "launch", "note": "x"}, "unknown action"),
    ],
)
async def test_a_refused_action_says_why_and_changes_nothing(
    seeded, session, console, fields, message
):
    page = await _act(console, ROW, **fields)
    assert page.status == 303 and page.location == ROW
    shown = await console.get(ROW)
    assert message in shown.text
    assert (await _api(seeded, session, "/api" + ROW))["state"] == "blocked"


async def test_an_action_the_transition_table_refuses_is_a_409_message(seeded, session, console):
    await _act(console, ROW, action="wipe", note="stolen")
    page = await _act(console, ROW, action="reset", note="oops")
    assert page.status == 303
    assert "Refused (409)" in (await console.get(ROW)).text
    assert (await _api(seeded, session, "/api" + ROW))["state"] == "wipe_pending"


async def test_bulk_preview_lists_the_rows_and_changes_nothing(seeded, session, console):
    await console.get("/", user="alice")
    fields = {"action": "allow", "note": "alice is back", "filter.user": "alice"}
    preview = await console.post("/bulk/preview", fields)
    assert preview.status == 200
    assert "3 rows match" not in preview.text
    assert "2 would change" in preview.text and "Nothing has changed yet." in preview.text
    assert "Rows: user = <strong>alice</strong>" in preview.text
    changed = preview.text.split('id="would-change"', 1)[1].split("</table>", 1)[0]
    assert "ALICEPHONE1" in changed and "ALICETAB3" in changed and "BOBPHONE2" not in changed
    assert 'name="filter.user" value="alice"' in preview.text  # carried to the confirmation
    rows = await _api(seeded, session, "/api/associations", user="alice")
    assert {r["state"] for r in rows["items"]} == {"blocked"}
    done = await console.post("/bulk/apply", {**fields, "expect_changed": "2"})
    assert done.status == 303 and done.location == "/?user=alice"
    listing = await console.get("/", user="alice")
    assert "Allowed 2 rows, 0 skipped." in listing.text
    rows = await _api(seeded, session, "/api/associations", user="alice")
    assert {r["state"] for r in rows["items"]} == {"allowed"}
    bob = await _api(seeded, session, "/api/associations/BOBPHONE2/bob")
    assert bob["state"] == "blocked"


async def test_bulk_preview_shows_skipped_rows_and_why(seeded, console):
    await _act(console, ROW, action="wipe", note="stolen")
    fields = {"action": "reset", "note": "audit", "filter.user": "alice"}
    preview = await console.post("/bulk/preview", fields)
    assert "1 would change</strong>, 1 would be skipped" in preview.text
    skipped = preview.text.split('id="would-skip"', 1)[1].split("</table>", 1)[0]
    assert "ALICEPHONE1" in skipped and "wipe" in skipped


async def test_a_bulk_action_without_a_filter_needs_all(seeded, session, console):
    await console.get("/")
    page = await console.post("/bulk/preview", {"action": "block", "note": "everyone"})
    assert page.status == 303
    assert 'give at least one filter, or "all": true' in html.unescape(
        (await console.get("/")).text
    )
    preview = await console.post("/bulk/preview", {"action": "allow", "note": "x", "all": "true"})
    assert "4 would change" in preview.text


async def test_the_apply_says_when_the_list_changed_since_the_preview(seeded, console):
    await console.get("/")
    fields = {"action": "allow", "note": "n", "filter.user": "alice", "expect_changed": "5"}
    await console.post("/bulk/apply", fields)
    page = await console.get("/", user="alice")
    assert "The preview listed 5: the list changed in between." in page.text


async def test_preapprove(seeded, session, console):
    await console.get("/")
    fields = {"device_id": "NEWPHONE9", "user": "bob", "note": "new hire"}
    page = await console.post("/preapprove", fields)
    assert page.status == 303 and page.location == "/associations/NEWPHONE9/bob"
    row = await _api(seeded, session, "/api/associations/NEWPHONE9/bob")
    assert row["never_seen"] is True and row["state"] == "allowed"
    again = await console.post("/preapprove", fields)
    assert again.status == 303
    assert "Refused (409)" in (await console.get("/")).text


async def test_preferences_send_only_what_changed(seeded, session, console):
    await console.get("/preferences")
    fields = {
        "auto_block_unregistered": "true",  # as it is (from the file): stays file
        "max_devices_per_mailbox": "3",
        "max_mailboxes_per_device": "",
        "refusal_style": "status",
        "new_device_access_when_registry_unreachable": "allow",
        "compliance_overrides_allow": "false",
        "note": "limit devices",
    }
    page = await console.post("/preferences", fields)
    assert page.status == 303
    prefs = await _api(seeded, session, "/api/preferences")
    assert prefs["max_devices_per_mailbox"] == 3
    assert prefs["sources"]["max_devices_per_mailbox"] == "admin"
    assert prefs["sources"]["auto_block_unregistered"] == "file"
    assert prefs["sources"]["refusal_style"] == "default"
    assert "Saved: max_devices_per_mailbox." in (await console.get("/preferences")).text
    await console.post("/preferences", {**fields, "use_file.max_devices_per_mailbox": "true"})
    prefs = await _api(seeded, session, "/api/preferences")
    assert prefs["max_devices_per_mailbox"] is None
    assert prefs["sources"]["max_devices_per_mailbox"] == "default"
    unchanged = await console.post("/preferences", {**fields, "max_devices_per_mailbox": ""})
    assert unchanged.status == 303
    assert "Nothing changed." in (await console.get("/preferences")).text


async def test_a_preference_the_api_refuses_says_why(seeded, session, console):
    await console.get("/preferences")
    await console.post("/preferences", {"max_devices_per_mailbox": "0"})
    assert "must be at least 1" in (await console.get("/preferences")).text
    prefs = await _api(seeded, session, "/api/preferences")
    assert prefs["max_devices_per_mailbox"] is None


async def test_changes_are_logged_as_admin_changes_of_the_api_route(seeded, console):
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        await _act(console, ROW, action="allow", note="n")
    change = next(e for e in logs if e["event"] == "admin_change")
    assert change["actor"] == "Ada Admin" and change["route"].startswith("/api/associations/")
