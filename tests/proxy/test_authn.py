"""The identity step against a real gateway and demo backends: one authenticated
identity per request (Basic or a validated Bearer token), never a client's claim."""

from __future__ import annotations

import base64
import io
import json
import struct
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from multidict import CIMultiDict

from sentry.model import AssociationKey
from sentry.observability import configure_logging
from sentry.policy import block
from sentry.settings import LoggingSettings
from sentry.testing.backend import BackendConfig
from sentry.testing.eas_client import basic_auth
from sentry.testing.gateway import DemoGateway, PoolSpec, demo_gateway
from sentry.testing.oauth import JwksServer, TokenIssuer, serve_jwks
from sentry.testing.state import DEFAULT_MAILBOXES, MailboxSpec

FOLDERSYNC = bytes.fromhex("03016a000007565203300001 01".replace(" ", ""))
WBXML = "application/vnd.ms-sync.wbxml"
MAILBOXES = (*DEFAULT_MAILBOXES, MailboxSpec("shared", "secret", "shared@example.com", "Shared"))
ISSUER = TokenIssuer()
# alice's realm: example.com, NetBIOS EXAMPLE or CORP; bare names are in it
REALMS = {
    "realms": [{"name": "example.com", "netbios": ["EXAMPLE", "CORP"]}],
    "default_realm": "example.com",
}


def sample(gw: DemoGateway, name: str, **labels: str) -> float:
    return gw.registry.get_sample_value(name, labels) or 0.0


def pools(bearer: bool = False) -> dict[str, PoolSpec]:
    config = BackendConfig(
        "exchange",
        MAILBOXES,
        require_provisioning=False,
        bearer=ISSUER.user_of if bearer else None,
    )
    return {"exchange": PoolSpec("exchange", (config,))}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as s:
        yield s


@pytest.fixture
async def basic_gw(tmp_path: Path) -> AsyncIterator[DemoGateway]:
    async with demo_gateway(tmp_path, pools(), identity=REALMS) as gw:
        yield gw


@pytest.fixture
async def oauth_gw(tmp_path: Path) -> AsyncIterator[DemoGateway]:
    (tmp_path / "jwks.json").write_bytes(ISSUER.jwks_bytes())
    identity = {"oauth": ISSUER.settings(jwks_file="jwks.json"), **REALMS}
    async with demo_gateway(tmp_path, pools(bearer=True), identity=identity) as gw:
        yield gw


async def post(
    session: aiohttp.ClientSession,
    gw: DemoGateway,
    authorization: Sequence[str],
    *,
    user: str | None = "alice",
    device: str = "AUTHDEV1",
    query: str | None = None,
    command: str = "FolderSync",
) -> tuple[int, CIMultiDict[str], bytes]:
    headers: CIMultiDict[str] = CIMultiDict(
        [("MS-ASProtocolVersion", "14.1"), ("Content-Type", WBXML)]
    )
    for value in authorization:
        headers.add("Authorization", value)
    if query is None:
        query = f"Cmd={command}&DeviceId={device}&DeviceType=TestPhone"
        query += "" if user is None else f"&User={user}"
    url = f"{gw.url}/Microsoft-Server-ActiveSync?{query}"
    async with session.post(url, data=FOLDERSYNC, headers=headers) as resp:
        return resp.status, CIMultiDict(resp.headers), await resp.read()


def backend_total(gw: DemoGateway) -> int:
    return gw.backend("exchange").stats.total


async def block_row(gw: DemoGateway, device: str, user: str) -> None:
    state = gw.gateway.state
    key = AssociationKey(device, f"{user}@example.com")
    await state.apply(block(state.snapshot, key, note="lost", actor="test", now=time.time()))


def foldersync_status(body: bytes) -> str | None:
    from sentry.eas.wbxml import decode

    node = decode(body).find_path("Status")
    return None if node is None else node.text


ALICE = basic_auth("alice", "secret")
BOB = basic_auth("bob", "secret")


# --- one Authorization header, one identity ---


async def test_two_authorization_headers_never_let_a_blocked_mailbox_through(
    basic_gw: DemoGateway, session: aiohttp.ClientSession
) -> None:
    assert (await post(session, basic_gw, [ALICE]))[0] == 200
    await block_row(basic_gw, "AUTHDEV1", "alice")
    seen = backend_total(basic_gw)
    # The decision used to be keyed on the last header (bob), the backend on the first.
    status, _, body = await post(session, basic_gw, [ALICE, BOB], user="bob")
    assert status == 400 and b"Authorization" in body
    status, _, _ = await post(session, basic_gw, [ALICE, ALICE])
    assert status == 400
    assert backend_total(basic_gw) == seen
    assert AssociationKey("AUTHDEV1", "bob") not in basic_gw.gateway.state.snapshot
    assert sample(basic_gw, "sentry_auth_refusals_total", scheme="multiple",
                  reason="duplicate_authorization") == 2  # fmt: skip


async def test_the_backend_sees_exactly_the_one_header_the_decision_used(
    basic_gw: DemoGateway, session: aiohttp.ClientSession
) -> None:
    value = "Basic  " + base64.b64encode(b"EXAMPLE\\alice:secret").decode()  # odd spacing kept
    status, _, _ = await post(session, basic_gw, [value], user="alice@example.com")
    assert status == 200
    assert basic_gw.backend("exchange").stats.last_authorization == (value,)
    assert AssociationKey("AUTHDEV1", "alice@example.com") in basic_gw.gateway.state.snapshot


async def test_basic_and_query_user_must_name_one_principal(
    basic_gw: DemoGateway, session: aiohttp.ClientSession
) -> None:
    assert (await post(session, basic_gw, [ALICE]))[0] == 200
    await block_row(basic_gw, "AUTHDEV1", "alice")
    seen = backend_total(basic_gw)
    status, _, _ = await post(session, basic_gw, [ALICE], user="bob")
    assert status == 400
    assert backend_total(basic_gw) == seen
    status, _, body = await post(session, basic_gw, [ALICE], user="EXAMPLE%5Calice")
    assert status == 200 and foldersync_status(body) == "129"  # keyed on alice: blocked
    assert sample(basic_gw, "sentry_auth_refusals_total", scheme="basic",
                  reason="user_mismatch") == 1  # fmt: skip


async def test_no_credentials_or_an_unusable_scheme_gets_a_challenge_and_no_row(
    basic_gw: DemoGateway, session: aiohttp.ClientSession
) -> None:
    for authorization in ([], ["NTLM TlRMTVNTUAABAAAAB4IIog=="], ["Negotiate YII="]):
        status, headers, _ = await post(session, basic_gw, authorization, device="NOCRED1")
        assert status == 401
        assert headers["WWW-Authenticate"].startswith("Basic realm=")
        assert "Bearer" not in headers["WWW-Authenticate"]  # OAuth is not configured
    status, _, _ = await post(session, basic_gw, ["Basic !!!"], device="NOCRED1")
    assert status == 400
    assert backend_total(basic_gw) == 0
    assert len(basic_gw.gateway.state.snapshot) == 0
    url = f"{basic_gw.url}/Microsoft-Server-ActiveSync"
    async with session.options(url) as resp:  # OPTIONS may come without credentials
        assert resp.status == 200 and "MS-ASProtocolVersions" in resp.headers


async def test_bearer_is_refused_when_oauth_is_not_configured(
    basic_gw: DemoGateway, session: aiohttp.ClientSession
) -> None:
    assert (await post(session, basic_gw, [ALICE]))[0] == 200
    await block_row(basic_gw, "AUTHDEV1", "alice")
    seen = backend_total(basic_gw)
    token = ISSUER.token("alice@example.com")
    # Today's hole: the decision used the query User of a Bearer request.
    status, headers, _ = await post(session, basic_gw, [f"Bearer {token}"], user="shared")
    assert status == 403 and "WWW-Authenticate" not in headers
    assert backend_total(basic_gw) == seen
    assert AssociationKey("AUTHDEV1", "shared") not in basic_gw.gateway.state.snapshot
    assert sample(basic_gw, "sentry_auth_refusals_total", scheme="bearer",
                  reason="oauth_not_configured") == 1  # fmt: skip


# --- OAuth: the decision is keyed on the token's user claim ---


async def test_a_valid_token_is_keyed_on_its_claim_and_forwarded_unchanged(
    oauth_gw: DemoGateway, session: aiohttp.ClientSession
) -> None:
    token = ISSUER.token("alice@example.com")
    status, _, body = await post(session, oauth_gw, [f"Bearer {token}"], user="alice@example.com")
    assert status == 200 and foldersync_status(body) == "1"
    stats = oauth_gw.backend("exchange").stats
    assert stats.requests[("alice", "FolderSync")] == 1  # the backend accepted the token
    assert stats.last_authorization == (f"Bearer {token}",)
    assert AssociationKey("AUTHDEV1", "alice@example.com") in oauth_gw.gateway.state.snapshot
    # The base64 query form may carry no User at all: the token names the mailbox.
    blob = _b64_query("AUTHDEV2")
    status, _, _ = await post(session, oauth_gw, [f"Bearer {token}"], query=blob)
    assert status == 200
    assert AssociationKey("AUTHDEV2", "alice@example.com") in oauth_gw.gateway.state.snapshot


def _b64_query(device: str) -> str:
    dev, kind = device.encode(), b"TestPhone"
    raw = bytes([141, 9]) + struct.pack("<H", 0x0409) + bytes([len(dev)]) + dev
    raw += bytes([0, len(kind)]) + kind
    return base64.b64encode(raw).decode()


async def test_a_blocked_mailbox_cannot_hide_behind_another_query_user(
    oauth_gw: DemoGateway, session: aiohttp.ClientSession
) -> None:
    token = ISSUER.token("alice@example.com")
    assert (await post(session, oauth_gw, [f"Bearer {token}"]))[0] == 200
    await block_row(oauth_gw, "AUTHDEV1", "alice")
    seen = backend_total(oauth_gw)
    status, _, _ = await post(session, oauth_gw, [f"Bearer {token}"], user="shared")
    assert status == 400
    status, _, body = await post(session, oauth_gw, [f"Bearer {token}"], user=None)
    assert status == 200 and foldersync_status(body) == "129"
    assert backend_total(oauth_gw) == seen


@pytest.mark.parametrize(
    ("token", "status", "reason"),
    [
        (ISSUER.token("alice", now=time.time() - 7200), 401, "token_expired"),
        (TokenIssuer(kid="key-1").token("alice"), 401, "token_bad_signature"),
        (ISSUER.token("alice", aud="https://elsewhere.example"), 403, "token_wrong_audience"),
        (ISSUER.token("alice", iss="https://evil.example"), 403, "token_wrong_issuer"),
        (ISSUER.token(None), 403, "token_no_user_claim"),
        ("e30.e30.e30", 401, "token_malformed"),
    ],
)
async def test_bad_tokens_are_answered_by_the_gateway(
    oauth_gw: DemoGateway, session: aiohttp.ClientSession, token: str, status: int, reason: str
) -> None:
    got, headers, _ = await post(session, oauth_gw, [f"Bearer {token}"], user=None)
    assert got == status
    if status == 401:  # the client refreshes its token (RFC 6750 §3.1)
        assert 'error="invalid_token"' in headers["WWW-Authenticate"]
    else:
        assert "WWW-Authenticate" not in headers
    assert backend_total(oauth_gw) == 0
    assert len(oauth_gw.gateway.state.snapshot) == 0
    assert sample(oauth_gw, "sentry_auth_refusals_total", scheme="bearer", reason=reason) == 1


async def test_no_credentials_are_challenged_for_basic_and_bearer(
    oauth_gw: DemoGateway, session: aiohttp.ClientSession
) -> None:
    status, headers, _ = await post(session, oauth_gw, [])
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Basic realm=")
    assert "Bearer realm=" in headers["WWW-Authenticate"]


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(LoggingSettings(level="debug", format="json"), stream=stream)
    yield stream
    structlog.reset_defaults()


async def test_tokens_and_passwords_never_reach_the_log(
    json_logs: io.StringIO, oauth_gw: DemoGateway, session: aiohttp.ClientSession
) -> None:
    good = ISSUER.token("alice@example.com")
    expired = ISSUER.token("alice@example.com", now=time.time() - 7200)
    foreign = ISSUER.token("alice@example.com", aud="https://elsewhere.example")
    secret = basic_auth("alice", "Tr0ub4dor&3-very-secret")
    await post(session, oauth_gw, [f"Bearer {good}"])
    await post(session, oauth_gw, [f"Bearer {expired}"])
    await post(session, oauth_gw, [f"Bearer {foreign}"], user="shared")
    await post(session, oauth_gw, [f"Bearer {good}", secret])
    await post(session, oauth_gw, [secret], user="bob")
    text = json_logs.getvalue()
    events = [json.loads(line)["event"] for line in text.splitlines() if line.startswith("{")]
    assert "auth_refused" in events and "request" in events
    for token in (good, expired, foreign):
        for part in token.split("."):
            assert part not in text
    assert secret.split()[1] not in text and "very-secret" not in text


# --- OAuth keys from a URL: rotation and outage ---


@pytest.fixture
async def rotating() -> AsyncIterator[tuple[TokenIssuer, JwksServer]]:
    issuer = TokenIssuer()
    server = await serve_jwks(issuer)
    yield issuer, server
    await server.stop()


async def _url_gateway(
    tmp_path: Path, issuer: TokenIssuer, server: JwksServer, **oauth: Any
) -> Any:
    settings = issuer.settings(jwks_url=server.url, **oauth)
    config = BackendConfig("exchange", MAILBOXES, require_provisioning=False, bearer=issuer.user_of)
    return demo_gateway(
        tmp_path, {"exchange": PoolSpec("exchange", (config,))}, identity={"oauth": settings}
    )


async def test_a_rotated_key_is_fetched_once_on_its_first_token(
    tmp_path: Path, rotating: tuple[TokenIssuer, JwksServer], session: aiohttp.ClientSession
) -> None:
    issuer, server = rotating
    async with await _url_gateway(tmp_path, issuer, server, jwks_min_refresh_seconds=0) as gw:
        assert server.fetches == 1
        issuer.rotate("key-2")
        status, _, _ = await post(session, gw, [f"Bearer {issuer.token('bob')}"], user="bob")
        assert status == 200 and server.fetches == 2
        status, _, _ = await post(session, gw, [f"Bearer {issuer.token('bob')}"], user="bob")
        assert status == 200 and server.fetches == 2  # known now: no fetch


async def test_unknown_kids_cannot_make_the_gateway_hammer_the_issuer(
    tmp_path: Path, rotating: tuple[TokenIssuer, JwksServer], session: aiohttp.ClientSession
) -> None:
    issuer, server = rotating
    async with await _url_gateway(tmp_path, issuer, server, jwks_min_refresh_seconds=3600) as gw:
        for i in range(5):
            stranger = TokenIssuer(kid=f"made-up-{i}")
            status, headers, _ = await post(session, gw, [f"Bearer {stranger.token('bob')}"])
            assert status == 401 and 'error="invalid_token"' in headers["WWW-Authenticate"]
        assert server.fetches == 1
        assert sample(gw, "sentry_jwks_refreshes_total", result="rate_limited") == 5


async def test_without_signing_keys_bearer_requests_wait(
    tmp_path: Path, rotating: tuple[TokenIssuer, JwksServer], session: aiohttp.ClientSession
) -> None:
    issuer, server = rotating
    server.fail = True
    async with await _url_gateway(tmp_path, issuer, server, jwks_min_refresh_seconds=0) as gw:
        status, headers, _ = await post(session, gw, [f"Bearer {issuer.token('bob')}"])
        assert status == 503 and int(headers["Retry-After"]) > 0
        assert backend_total(gw) == 0
        assert (await post(session, gw, [basic_auth("bob", "secret")], user="bob"))[0] == 200
        server.fail = False
        status, _, _ = await post(session, gw, [f"Bearer {issuer.token('bob')}"], user="bob")
        assert status == 200


# --- the Authenticator alone: remembered tokens ---


async def test_a_verified_token_is_remembered_but_its_expiry_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiohttp.test_utils import make_mocked_request
    from prometheus_client import CollectorRegistry

    import sentry.proxy.authn as authn_module
    from sentry.eas.request import EasRequest, parse_request
    from sentry.observability import Metrics
    from sentry.settings import IdentitySettings, OAuthSettings

    issuer = TokenIssuer()
    (tmp_path / "k.json").write_bytes(issuer.jwks_bytes())
    now = [time.time()]
    oauth = OAuthSettings(
        issuer=issuer.issuer,
        audience=(issuer.audience,),
        jwks_file="k.json",
        jwks_min_refresh_seconds=0,
    )
    authn = authn_module.Authenticator(
        "gw.example", IdentitySettings(oauth), Metrics(CollectorRegistry()),
        root=tmp_path, clock=lambda: now[0],
    )  # fmt: skip
    verifications: list[str] = []
    real = authn_module.verify_token

    def counting(token: str, *args: Any) -> Any:
        verifications.append(token)
        return real(token, *args)

    monkeypatch.setattr(authn_module, "verify_token", counting)
    await authn.start()
    try:
        token = issuer.token("alice@example.com", now=now[0], lifetime=600)
        headers = {"Authorization": f"Bearer {token}"}
        query = "Cmd=Sync&DeviceId=D1&DeviceType=T"
        eas = parse_request("POST", query, headers)

        async def check() -> Any:
            request = make_mocked_request("POST", f"/Microsoft-Server-ActiveSync?{query}", headers)
            return await authn.check(request, eas)

        for _ in range(3):
            out = await check()
            assert isinstance(out, EasRequest) and out.user is not None
            assert out.user.key == "alice@example.com"  # no realm: the UPN as the claim says
        assert len(verifications) == 1  # one signature check for three requests
        assert authn.jwks is not None
        assert await authn.jwks.refresh(force=True)  # new keys forget what old ones verified
        assert isinstance(await check(), EasRequest)
        assert len(verifications) == 2
        now[0] += 600 + 61  # past exp + leeway: remembered or not, it is expired
        refused = await check()
        assert (
            refused.status == 401 and 'error="invalid_token"' in refused.headers["WWW-Authenticate"]
        )
        assert len(verifications) == 2
    finally:
        await authn.close()
