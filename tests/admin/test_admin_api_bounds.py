"""Admin API input bounds: huge integers, deep or big JSON, broken Unicode, long
paths and unsupported methods get a 4xx with field-level messages, never a 500."""

from __future__ import annotations

import io

from admin_support import Api

from sentry.admin.api import MAX_BODY_BYTES, MAX_DEPTH


async def test_query_integers_are_range_checked(api: Api) -> None:
    status, body = await api.get("/api/associations?offset=9223372036854775808")
    assert (status, body["fields"]) == (400, {"offset": "must be at most 9223372036854775807"})
    status, body = await api.get("/api/associations?offset=" + "9" * 20)
    assert (status, body["fields"]) == (400, {"offset": "must be an integer"})
    status, body = await api.get("/api/audit?offset=9223372036854775807")
    assert status == 200 and body["items"] == []  # the largest offset is fine
    for text in ("1_000", " 5", "١٢", "5.0", "0x10", "", "-"):
        status, body = await api.get(f"/api/users?offset={text}")
        assert (status, body["fields"]) == (400, {"offset": "must be an integer"}), text
    status, body = await api.get("/api/devices?limit=1001&offset=-1")
    assert status == 400
    assert body["fields"] == {"limit": "must be at most 1000", "offset": "must be at least 0"}


async def test_body_integers_are_range_checked(api: Api) -> None:
    for value in (2**63, -(2**63) - 1, 10**400):
        status, body = await api.put("/api/preferences", {"max_devices_per_mailbox": value})
        assert status == 400, value
        assert body["fields"]["max_devices_per_mailbox"].startswith("must be at")


async def test_deep_json_is_refused(api: Api) -> None:
    for depth in (MAX_DEPTH + 1, 100_000):
        raw = ("[" * depth + "]" * depth).encode()
        status, body = await api.put("/api/preferences", data=raw)
        assert (status, body["fields"]) == (400, {"body": f"nested deeper than {MAX_DEPTH} levels"})
    nested: object = {}
    for _ in range(MAX_DEPTH - 2):  # with the body itself: MAX_DEPTH levels
        nested = {"x": nested}
    status, body = await api.put("/api/preferences", {"note": nested})
    assert (status, body["fields"]) == (400, {"note": "must be a string"})  # deep but allowed


async def test_a_body_over_the_limit_is_413_json(api: Api) -> None:
    big = io.BytesIO(b" " * (MAX_BODY_BYTES + 1))
    status, body = await api.put("/api/preferences", data=big)  # type: ignore[arg-type]
    assert status == 413 and "error" in body


async def test_text_must_be_valid_unicode(api: Api) -> None:
    raw = b'{"email": "alice\\ud800@example.com"}'
    status, body = await api.put("/api/users/alice", data=raw)
    assert (status, body["fields"]) == (
        400,
        {"email": "must be valid Unicode text (no lone surrogates)"},
    )
    raw = b'{"violations": [], "details": {"other": "ok \\udfff"}}'
    status, body = await api.put("/api/devices/x/compliance", data=raw)
    assert status == 400 and "Unicode" in body["fields"]["details.other"]


async def test_text_never_holds_nul(api: Api) -> None:
    """U+0000 cannot be stored in PostgreSQL's text: refused for every store alike."""
    status, body = await api.put("/api/users/alice", {"display_name": "Al\x00ice"})
    assert (status, body["fields"]) == (
        400,
        {"display_name": "must not contain U+0000 (NUL): it cannot be stored"},
    )
    status, body = await api.post("/api/associations/PHONE/bob/block", {"note": "lost\x00"})
    assert status == 400 and "NUL" in body["fields"]["note"]


async def test_path_parameters_are_bounded(api: Api) -> None:
    status, body = await api.get("/api/users/" + "a" * 1025)
    assert (status, body["fields"]) == (400, {"principal": "must be at most 1024 characters"})
    status, _ = await api.get("/api/users/" + "a" * 1024)
    assert status == 404


async def test_unsupported_methods_name_the_documented_ones(api: Api) -> None:
    status, body = await api.call("OPTIONS", "/api/associations/actions/block")
    assert (status, body) == (405, {"error": "Method Not Allowed"})
    assert api.last_headers["Allow"] == "POST"  # not GET: the more specific route owns it
    status, _ = await api.call("DELETE", "/api/associations/PHONE/bob")
    assert status == 405 and api.last_headers["Allow"] == "GET"
