"""Schemathesis over ``/api/openapi.json`` against a real running gateway, with its token.

Every check schemathesis has (all are on by default: no 5xx; status codes,
content types, headers and bodies as documented; schema-valid input accepted
and schema-violating input refused; ``Allow`` on 405; the stateful phase's
create/read/delete links) must pass: the document states every limit the API
applies (``CONFIG`` names the rules it cannot). Bounded and
deterministic: schemathesis' deterministic mode and a few examples per
operation. The CLI runs as a subprocess while this test's event loop serves
the gateway. (Its warning that the row routes mostly meet 404 stays: a row
exists only once a device has spoken EAS, which random paths never name.)
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp
import pytest
from admin_support import device

from sentry.admin.api import MAX_LINE_BYTES, ROUTES
from sentry.admin.schema import PATH_FIELD, Field
from sentry.testing.gateway import DemoGateway

EXAMPLES = 5
CONFIG = """
# Text never holds U+0000 (NUL): PostgreSQL's text type cannot store it, so the API refuses
# it for every store (400, "it cannot be stored"), which JSON Schema cannot state.
[generation]
allow-x00 = false
# Two rules OpenAPI 3.0's JSON Schema cannot state (it has no "contains"): a membership
# change must not name the same label or device in both "add" and "remove", and
# PUT /api/preferences must not both set a preference and hand it back to the file
# ("use_file"). Schema-valid input that breaks them is refused (400), so "schema-valid
# input is accepted" cannot hold for these four operations; every other check still runs.
[[operations]]
include-operation-id-regex = "^(put_label|label_members|move_device_labels|put_preferences)$"
checks.positive_data_acceptance.enabled = false
# Whether a text names a principal depends on the configured realms (a NetBIOS domain and
# a suffix of two different realms name no one) and on Unicode printability, which JSON
# Schema cannot state either; the two operations that CREATE a principal's row answer such
# a text with 400 (the others, which look a row up, answer 404: no such row).
[[operations]]
include-operation-id-regex = "^(put_user|preapprove_association)$"
checks.positive_data_acceptance.enabled = false
"""


# The suite-wide 120 s is a hang guard; this run grows with every admin operation (about
# 80 s alone on a loaded 2-core machine), so it gets its own, still bounded, limit.
@pytest.mark.timeout(360)
async def test_schemathesis_finds_nothing(
    gateway: DemoGateway, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    for user, device_id in (("alice", "FUZZ1"), ("bob", "FUZZ2")):  # rows to list and act on
        await device(gateway, session, user, device_id).provision()
    token = gateway.gateway.admin_token
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from schemathesis.cli import schemathesis; schemathesis()",
        "run", f"{gateway.admin_url}/api/openapi.json",
        "--header", f"Authorization: Bearer {token}",
        "--max-examples", str(EXAMPLES),
        "--generation-deterministic",
        "--workers", "1",
        "--no-color",
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 300)
    report = out.decode(errors="replace")
    assert proc.returncode == 0, report[-8000:]
    assert "Failures:" not in report and " passed" in report, report[-8000:]


def longest(f: Field) -> int:
    """The most bytes a value of ``f`` takes in a URL: a free string at its
    maximum length, each character a 4-byte UTF-8 sequence percent-encoded."""
    if f.choices:
        return 3 * max(len(c) for c in f.choices)
    if f.kind == "integer":
        return 3 * len(str(f.low))  # the longest is the most negative
    return 5 if f.kind == "boolean" else 12 * f.max_length


def test_every_documented_url_fits_the_admin_request_line() -> None:
    """The longest URL the document allows fits in the admin listener's request line."""
    for route in ROUTES:
        fields = [route.path_fields.get(name, PATH_FIELD) for name in route.params]
        path = len(route.path) + sum(longest(f) for f in fields)
        query = sum(len(name) + 2 + longest(f) for name, f in route.query.items())
        line = len(f"{route.method}  HTTP/1.1") + path + query
        assert line < MAX_LINE_BYTES, (route.method, route.path, line)
