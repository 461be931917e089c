"""The console's read pages over HTTP: what the API says, escaped, paged."""

from __future__ import annotations

import re

import pytest
from console_support import XSS, XSS_ESCAPED, seed

from sentry.admin.listing import FILTER_FIELDS
from sentry.model import Association, AssociationKey, Override, OverrideKind, Reason, Verdict
from sentry.policy.changes import PutAssociation
from sentry.testing.console import ConsoleClient

DASH = "\N{EN DASH}"
ROW_LINK = re.compile(r'<a href="/associations/([^/"]+)/([^"]+)">')


async def _api(gateway, session, method, path, body=None):
    headers = {"Authorization": f"Bearer {gateway.gateway.admin_token}"}
    async with session.request(method, gateway.admin_url + path, json=body, headers=headers) as r:
        assert r.status < 300, (path, r.status, await r.text())
        return await r.json()


def _rows(html: str) -> list[tuple[str, str]]:
    return ROW_LINK.findall(html.split('id="associations"', 1)[1].split("</table>", 1)[0])


async def _many(gateway, count: int) -> None:
    now = gateway.gateway.state.clock()
    rows = [
        Association(
            AssociationKey(f"DEV{i:05d}", f"user{i:05d}"),
            device_type="Android" if i % 3 == 0 else "iPhone",
            first_seen=now,
            last_seen=now,
            pool="exchange",
        )
        for i in range(count)
    ]
    await gateway.gateway.state.apply([PutAssociation(r) for r in rows])


async def test_the_list_pages_through_the_store(gateway, console: ConsoleClient):
    await _many(gateway, 250)
    first = await console.get("/")
    assert f"Rows 1{DASH}100 of 250" in first.text
    assert _rows(first.text)[0] == ("DEV00000", "user00000")
    assert len(_rows(first.text)) == 100
    assert 'href="/?offset=100" rel="next"' in first.text
    last = await console.get("/", offset="200", limit="100")
    assert f"Rows 201{DASH}250 of 250" in last.text
    assert len(_rows(last.text)) == 50 and 'rel="next"' not in last.text
    small = await console.get("/", limit="25", offset="25")
    assert f"Rows 26{DASH}50 of 250" in small.text and len(_rows(small.text)) == 25


async def test_filters_are_the_api_filters(gateway, console: ConsoleClient):
    await _many(gateway, 30)
    page = await console.get("/", device_type="Android", state="blocked")  # auto-block is on
    assert f"Rows 1{DASH}10 of 10" in page.text
    assert all(int(d[3:]) % 3 == 0 for d, _ in _rows(page.text))
    for name in FILTER_FIELDS:  # a filter the API gains appears here
        assert f'name="{name}"' in page.text, name
    assert '<option value="blocked" selected>blocked</option>' in page.text
    assert f"Rows 1{DASH}10 of 30" in (await console.get("/", reason="AUTO_BLOCK", limit="10")).text
    allowed = await console.get("/", state="allowed")
    assert "No rows" in allowed.text and "No association matches." in allowed.text
    found = await console.get("/", user="user00007")
    assert _rows(found.text) == [("DEV00007", "user00007")]
    blank = await console.get("/", state="", user=" ")
    assert f"Rows 1{DASH}30 of 30" in blank.text


async def test_a_filter_the_api_refuses_shows_its_message(gateway, console: ConsoleClient):
    page = await console.get("/", state="sleeping")
    assert page.status == 400
    assert "must be one of: allowed, blocked" in page.text


async def test_device_text_is_escaped_on_every_page(gateway, session, console: ConsoleClient):
    await seed(gateway, session)
    listing = await console.get("/")
    detail = await console.get("/associations/EVILPHONE4/shared")
    for page in (listing, detail):
        assert page.status == 200
        assert XSS not in page.text
        assert XSS_ESCAPED in page.text
    assert f"Evil/1 {XSS_ESCAPED}" in detail.text  # the User-Agent
    info = detail.text.split('id="device-information"', 1)[1].split("</table>", 1)[0]
    assert XSS_ESCAPED in info  # DeviceInformation Model


async def test_the_detail_view_shows_everything_about_a_row(gateway, session, console):
    await seed(gateway, session)
    await _api(
        gateway, session, "POST", "/api/devices",
        {"id": "M-ALICE", "owner": "alice", "platform": "ios", "eas_device_ids": ["ALICEPHONE1"]},
    )  # fmt: skip
    page = await console.get("/associations/ALICEPHONE1/alice")
    assert page.status == 200
    text = page.text
    assert "Decision now" in text and "AUTO_BLOCK" in text
    assert '<a href="/devices/M-ALICE">Open device M-ALICE</a>' in text
    assert "iPhone15,2" in text and "Work phone" in text  # DeviceInformation
    assert "first_seen" in text  # history
    assert '<option value="M-ALICE">' in text  # Link To candidates: alice's devices


async def test_an_unknown_row_is_a_404_page(gateway, console: ConsoleClient):
    page = await console.get("/associations/NOPE/nobody")
    assert page.status == 404
    assert "no association for device" in page.text


async def test_directory_push_and_operations_pages(gateway, session, console: ConsoleClient):
    await seed(gateway, session)
    await _api(gateway, session, "PUT", "/api/users/alice", {"email": "alice@example.com"})
    await _api(
        gateway, session, "PUT", "/api/exchange-settings/corp",
        {"user_name": "$USERID$", "email": "$EMAIL$", "server": "mail.example.com"},
    )  # fmt: skip
    await _api(gateway, session, "PUT", "/api/labels/staff", {"settings": ["corp"]})
    await _api(
        gateway, session, "POST", "/api/devices",
        {"id": "M-ALICE", "owner": "alice", "eas_device_ids": ["ALICEPHONE1"], "labels": ["staff"]},
    )  # fmt: skip
    users = await console.get("/users")
    assert '<a href="/users/alice">alice</a>' in users.text
    user = await console.get("/users/alice")
    assert "alice@example.com" in user.text and "M-ALICE" in user.text
    devices = await console.get("/devices", owner="alice")
    assert '<a href="/devices/M-ALICE">M-ALICE</a>' in devices.text
    device = await console.get("/devices/M-ALICE")
    assert "ALICEPHONE1" in device.text and "staff" in device.text
    labels = await console.get("/labels")
    assert "staff" in labels.text and "corp" in labels.text
    settings = await console.get("/exchange-settings")
    assert "mail.example.com" in settings.text and "$USERID$" in settings.text
    pools = await console.get("/pools")
    assert "exchange" in pools.text and "gmail" in pools.text and "healthy" in pools.text
    assert "user carol" in pools.text  # routing
    audit = await console.get("/audit", target="M-ALICE")
    assert audit.status == 200 and "register_device" in audit.text


@pytest.mark.parametrize("query", [{"since": "yesterday"}, {"until": "2026-13-01"}])
async def test_an_audit_filter_the_api_refuses_shows_its_message(gateway, console, query):
    page = await console.get("/audit", **query)
    assert page.status == 400
    assert "invalid query parameters" in page.text


async def test_the_preferences_page_shows_each_source(gateway, console: ConsoleClient):
    page = await console.get("/preferences")
    rows = page.text.split("<tbody>", 1)[1]
    auto = rows.split('name="auto_block_unregistered"', 1)[1].split("</tr>", 1)[0]
    assert '<option value="true" selected>' in auto and "source-file" in auto
    limit = rows.split('name="max_devices_per_mailbox"', 1)[1].split("</tr>", 1)[0]
    assert "source-default" in limit and 'placeholder="no limit"' in limit


async def test_override_details_are_shown(gateway, console: ConsoleClient):
    now = gateway.gateway.state.clock()
    row = Association(
        AssociationKey("OVR1", "bob"),
        first_seen=now,
        last_seen=now,
        override=Override(OverrideKind.BLOCK, "lost phone <b>", "Ada", now),
        reasons=frozenset({Reason.MANUAL}),
        verdict=Verdict.REFUSE,
    )
    await gateway.gateway.state.apply([PutAssociation(row)])
    page = await console.get("/associations/OVR1/bob")
    assert "Admin override" in page.text and "lost phone &lt;b&gt;" in page.text


async def test_the_access_rules_page_and_the_quarantine_filter(gateway, session, console):
    rule = {"name": "old-eas", "field": "protocol_version", "match": "lt", "value": "14.0"}
    await _api(gateway, session, "POST", "/api/access-rules", rule | {"action": "quarantine"})
    xss = {"name": "x", "field": "model", "match": "equals", "value": XSS, "action": "block"}
    await _api(gateway, session, "POST", "/api/access-rules", xss | {"note": XSS})
    page = await console.get("/access-rules")
    assert page.status == 200 and "old-eas" in page.text and "quarantine" in page.text
    assert XSS not in page.text and XSS_ESCAPED in page.text
    assert "Quarantine (0)" in page.text and 'href="/?state=quarantined"' in page.text
    now = gateway.gateway.state.clock()
    held = Association(
        AssociationKey("OLDPDA1", "alice"), protocol_version="12.1", first_seen=now,
        last_seen=now, verdict=Verdict.REFUSE, reasons=frozenset({Reason.QUARANTINE}),
        access_rule="old-eas",
    )  # fmt: skip
    await gateway.gateway.state.apply([PutAssociation(held)])
    assert "Quarantine (1)" in (await console.get("/access-rules")).text
    listed = await console.get("/", state="quarantined")
    assert _rows(listed.text) == [("OLDPDA1", "alice")]
