"""The audit log filtered by actor, target and time range: API, OpenAPI and CLI."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import urlencode

import pytest
from admin_support import Api
from structlog.testing import capture_logs

from sentry.admin.audit import parse_time
from sentry.cli import main
from sentry.testing.gateway import DemoGateway


async def _seed(api: Api) -> None:
    for actor, user in (("jane", "u1"), ("joe", "u2"), ("jane", "bob")):
        status, _ = await api.put(f"/api/users/{user}", {}, headers={"X-Sentry-Actor": actor})
        assert status == 200
    await api.ok("PUT", "/api/labels/sales", {})


async def test_filters_by_actor_target_and_time(api: Api) -> None:
    start = time.time()
    await _seed(api)
    everything = await api.ok("GET", "/api/audit")
    assert everything["total"] == 4
    jane = await api.ok("GET", "/api/audit?actor=jane")
    assert [e["target"] for e in jane["items"]] == ["user:bob", "user:u1"]
    assert jane["total"] == 2
    assert (await api.ok("GET", "/api/audit?actor=jan"))["total"] == 0  # exact
    bob = await api.ok("GET", "/api/audit?target=BOB")
    assert [e["target"] for e in bob["items"]] == ["user:bob"]
    label = await api.ok("GET", "/api/audit?target=label:&actor=admin")
    assert [e["action"] for e in label["items"]] == ["put_label"]
    newest = everything["items"][0]["at"]
    # since is inclusive, until exclusive; two entries may share a clock reading
    at = [parse_time(e["at"]) for e in everything["items"]]
    top = parse_time(newest)
    since_n = (await api.ok("GET", f"/api/audit?since={newest}"))["total"]
    until_n = (await api.ok("GET", f"/api/audit?until={newest}"))["total"]
    assert since_n == sum(1 for t in at if t >= top) >= 1
    assert until_n == sum(1 for t in at if t < top)
    assert since_n + until_n == 4
    since = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(start - 1))
    query = urlencode({"since": since, "until": "2999-01-01", "limit": 1, "offset": 1})
    page = await api.ok("GET", f"/api/audit?{query}")
    assert page["total"] == 4 and len(page["items"]) == 1


async def test_bad_times_are_400(api: Api) -> None:
    status, body = await api.get("/api/audit?since=yesterday&until=2020-13-01")
    assert status == 400 and set(body["fields"]) == {"since", "until"}
    empty = await api.ok("GET", "/api/audit?since=2026-01-02&until=2026-01-01")
    assert (empty["items"], empty["total"]) == ([], 0)  # an empty window, not an error
    status, body = await api.get("/api/audit?actor=")
    assert status == 400 and "actor" in body["fields"]


def test_parse_time() -> None:
    assert parse_time("1970-01-01") == 0.0
    assert parse_time("1970-01-01T00:01:00Z") == 60.0
    assert parse_time("1970-01-01T01:00:00+01:00") == 0.0
    with pytest.raises(ValueError):
        parse_time("soon")


async def test_documented_in_openapi(api: Api) -> None:
    doc = await api.ok("GET", "/api/openapi.json")
    params = {p["name"] for p in doc["paths"]["/api/audit"]["get"]["parameters"]}
    assert params == {"actor", "target", "since", "until", "offset", "limit"}


async def test_cli_audit_filters(
    api: Api, gateway: DemoGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    await _seed(api)
    target = ["--url", gateway.admin_url, "--token", gateway.gateway.admin_token]

    async def run(*argv: str) -> Any:
        capsys.readouterr()  # drop the gateway's log lines so far
        with capture_logs():
            code = await asyncio.to_thread(main, ["admin", "audit", *argv, *target, "--json"])
        out, err = capsys.readouterr()
        assert code == 0, (out, err)
        return json.loads(out)

    assert (await run("--by", "jane"))["total"] == 2
    assert [e["target"] for e in (await run("--target", "u2"))["items"]] == ["user:u2"]
    assert (await run("--since", "2999-01-01"))["total"] == 0
    assert (await run("--until", "2999-01-01", "--by", "joe"))["total"] == 1
