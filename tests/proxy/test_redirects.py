"""Backend 451 redirects: followed by the gateway within one backend type, cached per
mailbox, refused otherwise; the device never sees a 451 (real gateway, demo backends)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs
from yarl import URL

from sentry.eas.xmlform import to_xml
from sentry.model import AssociationKey
from sentry.observability import Metrics
from sentry.proxy.redirects import (
    Mailbox,
    RedirectCache,
    Target,
    allowed_target,
    parse_location,
)
from sentry.proxy.upstream import Upstreams
from sentry.settings import settings_from_mapping
from sentry.testing.backend import BackendConfig, RunningBackend, start_backend
from sentry.testing.eas_client import EasTestClient
from sentry.testing.gateway import DemoGateway, PoolSpec, demo_gateway
from sentry.testing.state import DEFAULT_MAILBOXES, MailboxSpec

FOLDERSYNC = '<FolderSync xmlns="FolderHierarchy"><SyncKey>0</SyncKey></FolderSync>'
EAS = "/Microsoft-Server-ActiveSync"
MAILBOXES = (*DEFAULT_MAILBOXES, MailboxSpec("carol", "secret", "carol@gmail.example", "Carol"))


# --- the cache and the rules, without I/O ---


def test_cache_ttl_lru_and_size_reports() -> None:
    sizes: list[int] = []
    cache = RedirectCache(ttl=100, max_entries=2, on_change=sizes.append)
    target = Target(URL("https://b.example"), "exchange2")
    cache.put(Mailbox("alice", None), "exchange", target, now=0)
    cache.put(Mailbox("bob", None), "exchange", target, now=10)
    assert cache.get("alice", now=99) is not None  # alive until created + ttl
    cache.put(Mailbox("carol", None), "exchange", target, now=20)  # evicts the oldest
    assert [e.mailbox.user for e in cache.entries(now=20)] == ["alice", "carol"]  # LRU
    assert len(cache) == 2
    assert cache.get("carol", now=120) is None  # expired and dropped
    assert cache.entries(now=200) == []
    assert sizes[-1] == 0 and max(sizes) == 2


def test_cache_put_replaces_and_drop_clear() -> None:
    cache = RedirectCache(ttl=10)
    a, b = Target(URL("https://a.example"), "p"), Target(URL("https://b.example"), "p")
    cache.put(Mailbox("alice", "example.com"), "exchange", a, now=0)
    cache.put(Mailbox("alice", "example.com"), "exchange", b, now=5)
    entry = cache.get("alice", now=14)
    assert entry is not None and entry.target == b and entry.expires == 15
    assert cache.drop("alice") and not cache.drop("alice")
    assert cache.clear() == 0


def _pools() -> Upstreams:
    settings = settings_from_mapping(
        {
            "pools": [
                {
                    "name": "exchange",
                    "type": "exchange",
                    "servers": ["https://a.corp.example"],
                    "redirect_allow": ["https://dr.corp.example:8443"],
                },
                {"name": "exchange2", "type": "exchange", "servers": ["https://B.corp.example/"]},
                {"name": "gmail", "type": "gmail", "servers": ["https://g.example"]},
            ]
        }
    )
    return Upstreams(settings.pools, Metrics(CollectorRegistry()))


def _eas(origin: str) -> str:
    return origin + "/Microsoft-Server-ActiveSync"


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        (_eas("https://b.corp.example"), ("https://b.corp.example", "exchange2")),
        (
            "https://B.CORP.EXAMPLE:443/microsoft-server-activesync/",
            ("https://b.corp.example", "exchange2"),
        ),
        (_eas("https://a.corp.example"), ("https://a.corp.example", "exchange")),
        (_eas("https://dr.corp.example:8443"), ("https://dr.corp.example:8443", "exchange")),
        (_eas("https://g.example"), None),  # another backend type
        (_eas("http://b.corp.example"), None),  # scheme differs
        (_eas("https://b.corp.example:444"), None),  # port differs
        (_eas("https://evil.example"), None),
        (_eas("https://dr.corp.example"), None),  # allowed only on 8443
    ],
)
def test_allowed_targets(location: str, expected: tuple[str, str] | None) -> None:
    upstreams = _pools()
    url = parse_location(location)
    assert url is not None
    target = allowed_target(url, upstreams.pools["exchange"], upstreams.pools.values())
    if expected is None:
        assert target is None
    else:
        assert target is not None and (str(target.origin), target.pool) == expected


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "/Microsoft-Server-ActiveSync",
        "https://b.example/owa/",
        "https://user:pw@b.example/Microsoft-Server-ActiveSync",
        "ftp://b.example/Microsoft-Server-ActiveSync",
        "https:///Microsoft-Server-ActiveSync",
        "https://b.example/" + "x" * 3000,
    ],
)
def test_locations_that_are_not_an_activesync_endpoint(value: str | None) -> None:
    assert parse_location(value) is None


@given(st.text(max_size=120))
def test_any_location_text_parses_or_is_none(value: str) -> None:
    url = parse_location(value)
    if url is not None:
        assert url.scheme in ("http", "https") and url.host


# --- the gateway in front of servers A (exchange), B (exchange2), G (gmail) ---


def _config(kind: str = "exchange") -> BackendConfig:
    return BackendConfig(kind, MAILBOXES, require_provisioning=False)


def _layout(**extra: Any) -> dict[str, PoolSpec]:
    return {
        "exchange": PoolSpec("exchange", (_config(),), extra=extra),
        "exchange2": PoolSpec("exchange", (_config(),)),
        "gmail": PoolSpec("gmail", (_config("gmail"),)),
    }


ROUTING = {
    "default": "exchange",
    "users": {"carol": "gmail"},
    "domains": {"moved.example": "exchange2"},
}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as s:
        yield s


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[DemoGateway]:
    async with demo_gateway(tmp_path, _layout(), routing=ROUTING) as running:
        yield running


def sample(gw: DemoGateway, outcome: str, pool: str = "exchange") -> float:
    labels = {"pool": pool, "outcome": outcome}
    return gw.registry.get_sample_value("sentry_redirects_total", labels) or 0.0


def client(
    gw: DemoGateway, session: aiohttp.ClientSession, user: str, device: str
) -> EasTestClient:
    return EasTestClient(session, gw.url + EAS, user, "secret", device_id=device)


async def cached(gw: DemoGateway, session: aiohttp.ClientSession) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {gw.gateway.admin_token}"}
    async with session.get(gw.admin_url + "/api/redirects", headers=headers) as resp:
        assert resp.status == 200
        answer: dict[str, Any] = await resp.json()
    return answer["items"]  # type: ignore[no-any-return]


async def test_a_moved_mailbox_is_followed_and_cached_and_the_device_never_sees_451(
    gw: DemoGateway, session: aiohttp.ClientSession
) -> None:
    a, b = gw.backend("exchange"), gw.backend("exchange2")
    a.move("alice", b.eas_url)
    alice = client(gw, session, "alice", "REDIR1")
    await alice.provision()  # Provision bodies are buffered: replayed to B
    assert a.stats.redirected["alice"] == 1 and a.stats.by_user["alice"] == 0
    assert b.stats.requests[("alice", "Provision")] == 2
    assert sample(gw, "followed") == 1
    assert [
        (e["user"], e["pool"], e["target"], e["target_pool"]) for e in await cached(gw, session)
    ] == [("alice", "exchange", b.url, "exchange2")]
    resp = await alice.post("FolderSync", FOLDERSYNC)  # streamed body: straight to B
    assert resp.status == 200 and "X-MS-Location" not in resp.headers
    assert b.stats.requests[("alice", "FolderSync")] == 1
    assert a.stats.redirected["alice"] == 1  # the cache saved a round trip
    assert sample(gw, "cache_hit") == 2


async def test_a_streamed_body_cannot_be_replayed_so_the_device_retries_onto_the_cache(
    gw: DemoGateway, session: aiohttp.ClientSession
) -> None:
    a, b = gw.backend("exchange"), gw.backend("exchange2")
    a.move("bob", b.eas_url)
    bob = client(gw, session, "bob", "REDIR2")
    resp = await bob.post("FolderSync", FOLDERSYNC, chunked=True)  # no declared length
    assert resp.status == 503 and resp.headers["Retry-After"] == "5"
    assert b.stats.total == 0 and sample(gw, "not_replayable") == 1
    resp = await bob.post("FolderSync", FOLDERSYNC)
    assert resp.status == 200 and b.stats.requests[("bob", "FolderSync")] == 1
    assert a.stats.redirected["bob"] == 1


async def test_a_small_body_of_declared_length_is_kept_and_replayed_at_once(
    gw: DemoGateway, session: aiohttp.ClientSession
) -> None:
    """A FolderSync is not inspected, but its body (a declared length up to
    64 KiB) is read whole before it is sent, so a 451 is replayed at once."""
    a, b = gw.backend("exchange"), gw.backend("exchange2")
    a.move("bob", b.eas_url)
    bob = client(gw, session, "bob", "REDIR2B")
    resp = await bob.post("FolderSync", FOLDERSYNC)
    assert resp.status == 200 and b.stats.requests[("bob", "FolderSync")] == 1
    assert a.stats.redirected["bob"] == 1 and sample(gw, "not_replayable") == 0


async def test_redirects_outside_the_backend_type_or_without_location_fail_closed(
    gw: DemoGateway, session: aiohttp.ClientSession
) -> None:
    a, g = gw.backend("exchange"), gw.backend("gmail")
    alice = client(gw, session, "alice", "REDIR3")
    cases = [
        (g.eas_url, "refused_foreign"),  # a gmail-type server: another backend type
        ("https://mail.elsewhere.example" + EAS, "refused_foreign"),
        ("", "refused_no_location"),
        ("https://b.example/owa/", "refused_invalid_location"),
    ]
    with capture_logs() as logs:
        for location, outcome in cases:
            a.move("alice", location)
            resp = await alice.post("Sync", b"")
            assert resp.status == 502 and "X-MS-Location" not in resp.headers, location
            assert b"elsewhere" not in resp.raw
            assert sample(gw, outcome) >= 1, outcome
    refused = [e for e in logs if e["event"] == "redirect_refused"]
    assert [e["reason"] for e in refused] == [o for _, o in cases]
    assert g.stats.total == 0
    assert await cached(gw, session) == []


async def test_redirect_hops_are_bounded(gw: DemoGateway, session: aiohttp.ClientSession) -> None:
    a, b = gw.backend("exchange"), gw.backend("exchange2")
    a.move("alice", b.eas_url)
    b.move("alice", a.eas_url)
    resp = await client(gw, session, "alice", "REDIR4").post("Sync", b"")
    assert resp.status == 502
    assert (a.stats.redirected["alice"], b.stats.redirected["alice"]) == (2, 1)
    assert sample(gw, "refused_too_many_hops") == 1


async def test_a_routing_change_clears_the_cached_redirect(
    gw: DemoGateway, session: aiohttp.ClientSession
) -> None:
    a, b = gw.backend("exchange"), gw.backend("exchange2")
    a.move("alice", b.eas_url)
    alice = client(gw, session, "alice", "REDIR5")
    assert (await alice.post("Sync", b"")).status == 200
    assert len(await cached(gw, session)) == 1
    headers = {"Authorization": f"Bearer {gw.gateway.admin_token}"}
    body = {"email": "alice@moved.example"}  # routes alice to exchange2 from now on
    async with session.put(gw.admin_url + "/api/users/alice", json=body, headers=headers) as r:
        assert r.status in (200, 201)
    assert await cached(gw, session) == []  # the list shows only entries still in force
    a.move("alice", None)
    assert (await alice.post("Sync", b"")).status == 200
    assert b.stats.requests[("alice", "Sync")] == 2


async def test_the_allow_list_admits_a_server_outside_every_pool(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    async with start_backend(_config()) as dr:
        layout = _layout(redirect_allow=[dr.url])
        async with demo_gateway(tmp_path, layout, routing=ROUTING) as running:
            running.backend("exchange").move("alice", dr.eas_url)
            resp = await client(running, session, "alice", "REDIR6").post("Sync", b"")
            assert resp.status == 200 and dr.stats.requests[("alice", "Sync")] == 1
            assert [e["target_pool"] for e in await cached(running, session)] == ["exchange"]


async def test_a_cached_target_that_went_away_falls_back_to_the_pool(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    dr: RunningBackend = await start_backend(_config())
    async with demo_gateway(tmp_path, _layout(redirect_allow=[dr.url]), routing=ROUTING) as running:
        a = running.backend("exchange")
        a.move("alice", dr.eas_url)
        alice = client(running, session, "alice", "REDIR7")
        assert (await alice.post("Sync", b"")).status == 200
        await dr.stop()
        a.move("alice", None)  # the mailbox is back home
        assert (await alice.post("Sync", b"")).status == 200
        assert a.stats.requests[("alice", "Sync")] == 1
        assert (
            running.registry.get_sample_value(
                "sentry_redirects_total", {"pool": "exchange", "outcome": "cached_target_failed"}
            )
            == 1
        )


async def test_a_451_verifies_the_row_even_when_the_redirect_is_refused(
    gw: DemoGateway, session: aiohttp.ClientSession
) -> None:
    # A 451 means the backend authenticated the user (README: accepted answers are
    # 2xx, 449 and 451): the row is verified and the DeviceId is established on the
    # exchange type, so a gmail-type mailbox cannot then reach the other backend type
    # from the same DeviceId (found by the model-based wire test).
    a, g = gw.backend("exchange"), gw.backend("gmail")
    a.move("alice", g.eas_url)  # another backend type: refused
    assert (await client(gw, session, "alice", "REDIR8").post("Sync", b"")).status == 502
    a.move("alice", "")  # no X-MS-Location: refused as well
    assert (await client(gw, session, "alice", "REDIR9").post("Sync", b"")).status == 502
    a.move("bob", gw.backend("exchange2").eas_url)  # followed, but the body was streamed
    resp = await client(gw, session, "bob", "REDIR10").post("FolderSync", FOLDERSYNC, chunked=True)
    assert resp.status == 503
    for device, user in (("REDIR8", "alice"), ("REDIR9", "alice"), ("REDIR10", "bob")):
        row = gw.gateway.state.snapshot.get(AssociationKey(device, user))
        assert row is not None and row.verified_at is not None, (device, user)
    resp = await client(gw, session, "carol", "REDIR8").post("Sync", b"")
    assert resp.status == 200 and "<Status>129</Status>" in to_xml(resp.element)
    assert g.stats.total == 0  # the gmail server never saw REDIR8
