"""Three real ``sentry run`` processes on one PostgreSQL database (issue 13).

One set of processes serves the whole module (started once: each test uses
mailboxes and DeviceIds of its own). Node C reaches the database through a
``CuttableProxy``, so a test can cut it off while A and B go on.

- convergence: a Ping held on B ends when A blocks its association, also
  after every node's database connections were terminated;
- invariants: first requests for one mailbox on two nodes at the same moment
  never both count (max devices per mailbox), and a device that reaches two
  backend types through two nodes keeps one type;
- a node cut off from the database: known associations keep their last
  decision, new ones follow ``new_device_access``, admin writes answer 503
  with Retry-After, ``/readyz`` is 503, the failure is counted; once the
  path is back, the node catches up from the change feed.

Waits poll for a positive signal with a generous hang guard; nothing asserts
a duration.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
import asyncpg
import pytest

from sentry.testing.cluster import Node, Proc, node_settings, start_backend_process, start_node
from sentry.testing.eas_client import EasTestClient
from sentry.testing.faulty import CuttableProxy
from sentry.testing.pgfixtures import run_sync
from sentry.testing.postgres import Databases

PING = (
    '<Ping xmlns="Ping"><HeartbeatInterval>600</HeartbeatInterval><Folders><Folder>'
    "<Id>1</Id><Class>Email</Class></Folder></Folders></Ping>"
)
EXCHANGE_USERS = "alice,bob,shared,dave,erin,frank,gina,hank"


class Cluster:
    def __init__(self, nodes: dict[str, Node], procs: list[Proc], proxy: CuttableProxy, dsn: str):
        self.nodes, self.procs, self.proxy, self.dsn = nodes, procs, proxy, dsn

    def __getitem__(self, name: str) -> Node:
        return self.nodes[name]


def _via(dsn: str, proxy: CuttableProxy) -> str:
    """``dsn`` through ``proxy``: its host and port, also those a socket DSN
    names in its query (a throwaway server listens on a Unix socket only)."""
    parts = urlsplit(dsn)
    netloc = parts.netloc.rsplit("@", 1)
    auth = netloc[0] + "@" if len(netloc) == 2 else ""
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k not in ("host", "port")])
    return parts._replace(netloc=f"{auth}{proxy.host}:{proxy.port}", query=query).geturl()


def _proxy_for(dsn: str) -> CuttableProxy:
    """A cuttable proxy in front of the server ``dsn`` names (TCP or Unix socket)."""
    target = urlsplit(dsn)
    query = dict(parse_qsl(target.query))
    socket_dir = query.get("host", "")
    if socket_dir.startswith("/"):
        path = f"{socket_dir}/.s.PGSQL.{query.get('port', '5432')}"
        return CuttableProxy("127.0.0.1", 0, unix_path=path)
    return CuttableProxy(target.hostname or "127.0.0.1", target.port or 5432)


@pytest.fixture(scope="module")
def cluster(pg_database: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    dsn = run_sync(pg_database.create())
    work = tmp_path_factory.mktemp("cluster")
    procs: list[Proc] = []
    proxy = _proxy_for(dsn)
    try:
        users = ",".join(f"{u}:secret" for u in EXCHANGE_USERS.split(","))
        exchange, exchange_url = start_backend_process(work, "exchange", users)
        procs.append(exchange)
        gmail, gmail_url = start_backend_process(work, "gmail", "carol:secret")
        procs.append(gmail)
        pools = [
            {"name": "exchange", "type": "exchange", "servers": [exchange_url]},
            {"name": "gmail", "type": "gmail", "servers": [gmail_url]},
        ]
        routing = {"default": "exchange", "users": {"carol": "gmail"}}
        prefs = {"max_devices_per_mailbox": 1, "new_device_access": "block"}
        nodes = {}
        for name in ("a", "b", "c"):
            node_dsn = _via(dsn, proxy) if name == "c" else dsn
            settings = node_settings(node_dsn, pools, routing, preferences=prefs)
            nodes[name] = start_node(work, name, settings)
            procs.append(nodes[name].proc)
        yield Cluster(nodes, procs, proxy, dsn)
    finally:
        for proc in reversed(procs):
            proc.stop()
        proxy.close()


def _client(session: aiohttp.ClientSession, node: Node, user: str, device: str) -> EasTestClient:
    return EasTestClient(
        session, f"{node.url}/Microsoft-Server-ActiveSync", user, "secret", device_id=device
    )


async def _until(
    check: Callable[[], Any],
    what: str,
    timeout: float = 30.0,
    also: Callable[[], Any] | None = None,
) -> Any:
    """Poll ``check`` (run in a thread: it may block) until it is truthy;
    on a timeout the failure shows what ``also`` returns."""
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(check)
        if value:
            return value
        if time.monotonic() > deadline:
            seen = "" if also is None else f": {await asyncio.to_thread(also)!r}"
            raise AssertionError(f"timed out waiting for {what}{seen}")
        await asyncio.sleep(0.05)


def _row(node: Node, device: str, user: str) -> dict[str, Any] | None:
    status, body, _ = node.admin("GET", f"/api/associations/{device}/{user}")
    return body if status == 200 else None


def _held(node: Node) -> float:
    return node.metric("sentry_held_long_polls")


async def _hold_ping(
    session: aiohttp.ClientSession, node: Node, user: str, device: str
) -> asyncio.Future[Any]:
    client = _client(session, node, user, device)
    await client.provision()
    before = await asyncio.to_thread(_held, node)
    ping = asyncio.ensure_future(client.post("Ping", PING, timeout=90))
    await _until(lambda: _held(node) > before, f"a Ping held on {node.name}")
    return ping


def _block(node: Node, device: str) -> tuple[int, Any, dict[str, str]]:
    body = {"filter": {"device_id": device}, "note": "cluster test"}
    return node.admin("POST", "/api/associations/actions/block", body)  # type: ignore[no-any-return]


async def test_a_block_through_one_node_ends_a_ping_held_on_another(cluster: Cluster) -> None:
    a, b = cluster["a"], cluster["b"]
    applied_before = await asyncio.to_thread(b.metric, "sentry_cluster_changes_applied_total")
    async with aiohttp.ClientSession() as session:
        ping = await _hold_ping(session, b, "alice", "CLUSTERA001")
        await _until(lambda: _row(a, "CLUSTERA001", "alice"), "A to learn B's first sight")
        status, answer, _ = await asyncio.to_thread(_block, a, "CLUSTERA001")
        assert status == 200, answer
        assert answer["changed"] == [{"device_id": "CLUSTERA001", "user": "alice"}]
        r = await asyncio.wait_for(ping, 60)
        assert (r.status, r.text("Status")) == (200, "129")
    assert await asyncio.to_thread(b.metric, "sentry_cluster_changes_applied_total") > (
        applied_before
    )
    assert await asyncio.to_thread(b.metric, "sentry_cluster_notifications_total") >= 1
    assert await asyncio.to_thread(b.metric, "sentry_cluster_listening") == 1
    lag = await asyncio.to_thread(b.get, "/metrics")
    assert "sentry_cluster_lag_seconds{" in lag[1]


async def test_terminated_connections_lose_no_change(cluster: Cluster) -> None:
    a, b = cluster["a"], cluster["b"]
    async with aiohttp.ClientSession() as session:
        ping = await _hold_ping(session, b, "bob", "CLUSTERT001")
        await _until(lambda: _row(a, "CLUSTERT001", "bob"), "A to learn B's first sight")
        conn = await asyncpg.connect(cluster.dsn)
        try:
            ended = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await conn.close()
        assert ended >= 6  # every node's pool and listener
        # the block is written through A's fresh connection; B hears of it by
        # its new LISTEN (or its catch-up after reconnecting): nothing is lost
        status, answer, _ = await asyncio.to_thread(_block, a, "CLUSTERT001")
        assert status == 200, answer
        r = await asyncio.wait_for(ping, 60)
        assert (r.status, r.text("Status")) == (200, "129")
    resumed = await asyncio.to_thread(b.log_events, "cluster_feed_resumed")
    assert max(e["reconnects"] for e in resumed) >= 1  # listening again, caught up


async def test_first_requests_on_two_nodes_at_once_never_both_count(cluster: Cluster) -> None:
    """max_devices_per_mailbox is 1: of two phones of one mailbox that first
    appear on A and B at the same moment, exactly one is allowed, on both nodes."""
    a, b = cluster["a"], cluster["b"]
    async with aiohttp.ClientSession() as session:
        for user in ("shared", "dave", "gina"):
            first = _client(session, a, user, f"RACE{user.upper()}A")
            second = _client(session, b, user, f"RACE{user.upper()}B")
            await asyncio.gather(first.provision(), second.provision(), return_exceptions=True)
            for node in (a, b):
                rows = await _until(
                    lambda node=node, user=user: _both_rows(node, user), f"{user} rows"
                )
                states = sorted(r["state"] for r in rows)
                assert states == ["allowed", "blocked"], (node.name, user, rows)


def _both_rows(node: Node, user: str) -> list[dict[str, Any]] | None:
    status, body, _ = node.admin("GET", f"/api/associations?user={user}")
    assert status == 200, body
    rows = [r for r in body["items"] if r["device_id"].startswith("RACE")]
    return rows if len(rows) == 2 else None


async def test_one_backend_type_per_device_holds_across_nodes(cluster: Cluster) -> None:
    """One phone signs in an exchange mailbox through A and a gmail-type one
    through B at the same moment: one type is established, the other mailbox
    is refused as mixing backend types, and both nodes agree."""
    a, b = cluster["a"], cluster["b"]
    device = "MIXEDTYPE001"
    async with aiohttp.ClientSession() as session:
        erin, carol = _client(session, a, "erin", device), _client(session, b, "carol", device)
        await asyncio.gather(erin.provision(), carol.provision(), return_exceptions=True)
        await asyncio.gather(
            erin.post("FolderSync", _FOLDER_SYNC), carol.post("FolderSync", _FOLDER_SYNC)
        )
        for node in (a, b):
            rows = await _until(
                lambda node=node: _mixed(node, device),
                f"one refused mailbox on {node.name}",
                also=lambda node=node: node.admin("GET", f"/api/associations?device_id={device}"),
            )
            assert len(rows) == 1, rows


_FOLDER_SYNC = '<FolderSync xmlns="FolderHierarchy"><SyncKey>0</SyncKey></FolderSync>'


def _mixed(node: Node, device: str) -> list[dict[str, Any]] | None:
    status, body, _ = node.admin("GET", f"/api/associations?device_id={device}")
    assert status == 200, body
    rows = body["items"]
    if len(rows) != 2:
        return None
    refused = [r for r in rows if "MIXED_BACKEND" in r.get("reasons", [])]
    allowed = [r for r in rows if r["state"] == "allowed"]
    if len(refused) != 1 or len(allowed) != 1 or not allowed[0]["verified"]:
        return None
    assert allowed[0]["backend_type"] != refused[0]["backend_type"]
    return refused


async def test_a_node_cut_off_from_the_database_degrades_then_catches_up(
    cluster: Cluster,
) -> None:
    a, c = cluster["a"], cluster["c"]
    async with aiohttp.ClientSession() as session:
        known = _client(session, c, "frank", "CUTOFF0001")
        await known.provision()
        await _until(lambda: _row(a, "CUTOFF0001", "frank"), "A to learn C's first sight")
        errors_before = await asyncio.to_thread(c.metric, "sentry_store_errors_total")
        cluster.proxy.cut()
        try:
            # C finds out by its next write, check or keepalive
            await _until(lambda: c.get("/readyz")[0] == 503, "C not ready")
            # a change made meanwhile on A: C cannot hear of it yet
            status, answer, _ = await asyncio.to_thread(_block, a, "CUTOFF0001")
            assert status == 200, answer
            # known association: its last decision (allowed) stands on C
            r = await known.post("FolderSync", _FOLDER_SYNC)
            assert r.status == 200 and r.text("Status") == "1"
            # a new device follows new_device_access (block) and is not stored
            new = _client(session, c, "hank", "CUTOFF0002")
            r = await new.post("FolderSync", _FOLDER_SYNC)
            assert r.text("Status") == "129" or r.status == 403
            # admin writes: 503 with Retry-After, never 500
            status, answer, headers = await asyncio.to_thread(_block, c, "CUTOFF0001")
            assert status == 503, answer
            assert int(headers["Retry-After"]) >= 1
            readyz = (await asyncio.to_thread(c.get, "/readyz"))[1]
            assert "unreachable" in readyz
            assert await asyncio.to_thread(c.metric, "sentry_store_errors_total") > errors_before
        finally:
            cluster.proxy.restore()
        # back: C catches up from the feed and applies A's block
        await _until(lambda: c.get("/readyz")[0] == 200, "C ready again", timeout=60)
        await _until(
            lambda: (_row(c, "CUTOFF0001", "frank") or {}).get("state") == "blocked",
            "C to apply A's block",
            timeout=60,
        )
        r = await known.post("FolderSync", _FOLDER_SYNC)
        assert r.text("Status") == "129" or r.status == 403
        assert _row(a, "CUTOFF0002", "hank") is None
    assert await asyncio.to_thread(c.metric, "sentry_cluster_catchups_total") >= 1
