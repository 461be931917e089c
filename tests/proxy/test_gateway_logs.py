"""Every log line through the redaction: malformed requests, broken backends.

A real gateway logs into memory exactly as ``sentry run`` does; the tests
send what an attacker (or a broken client) sends and then search the *whole*
output for the password, in plain text and in its Basic form, and check that
every line is one JSON object.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sentry.testing.eas_client import basic_auth
from sentry.testing.faulty import refusing_port, url_of
from sentry.testing.gateway import DemoGateway, PoolSpec, demo_gateway
from sentry.testing.logs import CapturedLog, captured_log_output
from sentry.testing.raw_client import RawConnection, request_bytes

PASSWORD = "Tr0ub4dor&3-very-secret"
BASIC = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
EAS = "/Microsoft-Server-ActiveSync?Cmd=FolderSync&User=alice&DeviceId=LOGS0001&DeviceType=iPhone"
AUTH = ("Authorization", f"Basic {BASIC}")

MALFORMED = {
    "bare_lf": request_bytes("POST", EAS, [AUTH, ("MS-ASProtocolVersion", "14.1")], eol=b"\n"),
    "nul_after_credential": request_bytes("POST", EAS, [("Authorization", f"Basic {BASIC}\x00")]),
    "credential_in_a_huge_header": request_bytes(
        "POST", EAS, [("Authorization", f"Basic {BASIC}" + "A" * 70_000)]
    ),
    "bad_header_name": request_bytes("POST", EAS, [AUTH, ("Bad Name", "x")]),
    "cr_in_value": request_bytes("POST", EAS, [("Authorization", f"Basic {BASIC}\rX")]),
    "bad_version": request_bytes("POST", EAS, [AUTH], version="HTTP/9.9"),
    "bad_chunk": request_bytes(
        "POST", EAS, [AUTH, ("Transfer-Encoding", "chunked")], b"zz\r\n" + BASIC.encode()
    ),
    "garbage_method": b"P\x00ST "
    + EAS.encode()
    + b" HTTP/1.1\r\n"
    + f"Authorization: Basic {BASIC}\r\n\r\n".encode(),
}


def assert_no_secret(text: str) -> None:
    assert PASSWORD not in text
    assert BASIC not in text
    assert BASIC[:24] not in text  # not even a prefix of the credential


@pytest.fixture
def log() -> Iterator[CapturedLog]:
    with captured_log_output() as captured:
        yield captured


@pytest.fixture(params=[False, True], ids=["http", "https"])
async def gw(
    request: pytest.FixtureRequest, tmp_path: Path, log: CapturedLog
) -> AsyncIterator[DemoGateway]:
    async with demo_gateway(tmp_path, gateway={"tls": {"enabled": request.param}}) as g:
        yield g


async def send_raw(url: str, data: bytes) -> bytes:
    async with await RawConnection.open(url) as conn:
        await conn.send(data)
        await conn.closed_by_peer(timeout=10)
        return b""


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_malformed_requests_never_write_the_credential(
    gw: DemoGateway, log: CapturedLog, case: str
) -> None:
    async with await RawConnection.open(gw.url) as conn:
        await conn.send(MALFORMED[case])
        answer = await conn.response()
    assert answer.status in (400, 414, 431, 501)
    assert_no_secret(answer.body.decode("latin-1"))  # nor echoed back to the device
    assert_no_secret(log.text)
    assert log.not_json() == []
    assert gw.backend("exchange").stats.total == 0


async def test_an_upstream_failure_answers_a_fixed_text_and_logs_redacted(
    tmp_path: Path, log: CapturedLog
) -> None:
    with refusing_port() as closed:
        dead = url_of(closed)
        pools = {"exchange": PoolSpec("exchange", extra={"servers": [dead]})}
        async with demo_gateway(tmp_path, pools, gateway={"tls": {"enabled": False}}) as gw:
            headers = [
                ("Authorization", basic_auth("alice", PASSWORD)),
                ("MS-ASProtocolVersion", "14.1"),
            ]
            async with await RawConnection.open(gw.url) as conn:
                await conn.send(request_bytes("POST", EAS, headers, b""))
                answer = await conn.response()
    assert answer.status in (502, 503)
    body = answer.body.decode()
    assert "127.0.0.1" not in body and dead not in body and "Authorization" not in body
    assert body.strip() in ("bad gateway", "service unavailable")
    assert_no_secret(log.text)
    assert log.not_json() == []
    (event,) = [e for e in log.events() if e.get("event") == "request"]
    assert event["decision"] == "forward" and event["error"]
