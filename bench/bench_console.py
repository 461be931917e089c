"""Web console page times over 100,000 associations.

Run: ``.venv/bin/python bench/bench_console.py``. A SQLite state file with
100,000 associations (95,000 DeviceIds for 60,000 users, all verified; 5%
blocked by an admin, 3% wiped or wipe pending, 80% with DeviceInformation) is generated
once into ``bench/results/console_100k.db`` (git-ignored; delete it to
regenerate) with the store's own schema and row format. A gateway is started
on a copy of it (in this process, TLS off on the admin port), a console
client signs in, and each page is fetched ``RUNS`` times after one warm-up:
the wall time of the whole HTTP round trip (client and server share this
process and its event loop, so the numbers include the client's share).
The same list query through the JSON API is timed beside it, to show what
the HTML costs on top. A ticker task records the event loop's longest stall
during each series: what a device request arriving meanwhile would wait
(SQL runs on the store's thread and templates render in a worker thread;
the user search scans the in-memory keys on the loop). Prints a markdown table, writes
``bench/results/bench_console.json``.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp

from sentry.model import (
    Association,
    AssociationKey,
    DeviceInformation,
    Override,
    OverrideKind,
    Reason,
    Verdict,
    WipeStatus,
)
from sentry.testing.console import ConsoleClient, console_session
from sentry.testing.gateway import demo_gateway

ROWS = 100_000
DEVICES = 95_000
USERS = 60_000
RUNS = 20
NOW = 1_700_000_000.0
RESULTS = Path(__file__).resolve().parent / "results"
DATABASE = RESULTS / "console_100k.db"
TYPES = ("iPhone", "Android", "iPad", "Outlook", "SAMSUNGSMG991B")

PAGES: dict[str, str] = {
    "list, first page (100 rows)": "/",
    "list, middle page (offset 50,000)": "/?offset=50000",
    "list, last page (offset 99,900)": "/?offset=99900",
    "list, 1,000 rows per page": "/?limit=1000",
    "list, state=blocked (store filter)": "/?state=blocked",
    "list, device_type=iPad, deep page": "/?device_type=iPad&offset=15000",
    "list, user search 'user4711'": "/?user=user4711",
    "association detail": "/associations/{device}/{user}",
}
API = {
    "API /api/associations (first 100)": "/api/associations",
    "API /api/associations?offset=99900": "/api/associations?offset=99900",
}


def associations(rng: random.Random) -> Iterator[Association]:
    """ROWS rows: the first DEVICES on their own DeviceId, the rest second mailboxes."""
    for i in range(ROWS):
        device = i if i < DEVICES else (i - DEVICES) * 7
        user = (device * 7919 + (0 if i < DEVICES else 1)) % USERS
        seen = NOW - rng.randint(0, 30_000_000)
        roll = rng.random()
        blocked = roll < 0.05
        wipe = WipeStatus.PENDING if 0.05 <= roll < 0.06 else WipeStatus.NONE
        if 0.06 <= roll < 0.08:
            wipe = WipeStatus.WIPED
        override = Override(OverrideKind.BLOCK, "ticket 4711", "admin", NOW) if blocked else None
        yield Association(
            AssociationKey(f"{device:016X}", f"user{user}"),
            device_type=rng.choice(TYPES),
            user_agent="Apple-iPhone15C2/2104.1",
            protocol_version=rng.choice(("14.1", "16.1")),
            device_info=_info(rng, i) if rng.random() < 0.8 else None,
            first_seen=seen,
            last_seen=seen + rng.randint(0, 1_000_000),
            verified_at=seen,  # accepted by the backend (unverified rows would expire)
            override=override,
            verdict=Verdict.REFUSE if blocked else Verdict.FORWARD,
            reasons=frozenset({Reason.MANUAL}) if blocked else frozenset(),
            wipe=wipe,
            pool="exchange",
            backend_type="exchange",
        )


def _info(rng: random.Random, i: int) -> DeviceInformation:
    return DeviceInformation(
        model=rng.choice(("iPhone15,2", "SM-G991B", "Pixel 8")),
        imei=f"35{rng.randrange(10**13):013d}",
        friendly_name=f"Phone {i}",
        os="iOS 17.1",
        user_agent="Apple-iPhone15C2/2104.1",
    )


def generate(path: Path) -> None:
    """Write the benchmark database with the store's own schema and row format."""
    from sentry.store._sqlite_rows import ASSOCIATION_COLUMNS, PLACEHOLDERS, association_params
    from sentry.store._sqlite_schema import migrate

    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    migrate(conn)
    conn.execute("BEGIN")
    insert = f"INSERT INTO associations ({ASSOCIATION_COLUMNS}) VALUES ({PLACEHOLDERS})"
    conn.executemany(insert, map(association_params, associations(random.Random(1))))
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    tmp.rename(path)


class Ticker:
    """The event loop's longest stall: a task that asks to wake every millisecond
    and records the longest gap it saw (what a device request would wait)."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            self.worst = max(self.worst, now - last)
            last = now

    def __enter__(self) -> Ticker:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def _time(client: ConsoleClient, path: str, expect: str) -> dict[str, float]:
    assert (await client.get(path)).status == 200, path  # warm-up (and a check)
    times, size = [], 0
    with Ticker() as ticker:
        for _ in range(RUNS):
            start = time.perf_counter()
            page = await client.get(path)
            times.append((time.perf_counter() - start) * 1000)
            assert page.status == 200 and expect in page.text, path
            size = len(page.text)
    times.sort()
    return {
        "median_ms": statistics.median(times),
        "p95_ms": times[int(len(times) * 0.95) - 1],
        "max_ms": times[-1],
        "loop_stall_ms": ticker.worst * 1000,
        "kib": size / 1024,
    }


async def measure(root: Path) -> dict[str, dict[str, float]]:
    shutil.copy(DATABASE, root / "sentry.db")
    async with (
        demo_gateway(root, gateway={"tls": {"enabled": False}}) as gw,
        console_session() as session,
    ):
        total = (await _api(session, gw))["total"]
        assert total == ROWS, total
        client = ConsoleClient(session, gw.admin_url)
        await client.sign_in(gw.gateway.admin_token, "bench")
        first = (await _api(session, gw, "?state=blocked&limit=1"))["items"][0]
        results = {}
        for name, path in PAGES.items():
            path = path.format(device=first["device_id"], user=first["user"])
            results[name] = await _time(client, path, "Sentry console")
        api = ConsoleClient(session, gw.admin_url)
        session.headers["Authorization"] = f"Bearer {gw.gateway.admin_token}"
        for name, path in API.items():  # the same session: cookies are ignored by /api/
            results[name] = await _time(api, path, '"items"')
        return results


async def _api(session: aiohttp.ClientSession, gw: object, query: str = "") -> dict[str, object]:
    headers = {"Authorization": f"Bearer {gw.gateway.admin_token}"}  # type: ignore[attr-defined]
    url = f"{gw.admin_url}/api/associations{query}"  # type: ignore[attr-defined]
    async with session.get(url, headers=headers) as resp:
        return await resp.json()  # type: ignore[no-any-return]


def main() -> None:
    RESULTS.mkdir(exist_ok=True)
    if not DATABASE.exists():
        start = time.perf_counter()
        generate(DATABASE)
        print(f"generated {DATABASE.name} in {time.perf_counter() - start:.0f} s")
    with tempfile.TemporaryDirectory() as tmp:
        results = asyncio.run(measure(Path(tmp)))
    print(f"\nconsole pages over {ROWS:,} associations (SQLite), {RUNS} runs each\n")
    print("| page | median ms | p95 ms | max ms | longest event-loop stall ms | page KiB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        print(
            f"| {name} | {r['median_ms']:.1f} | {r['p95_ms']:.1f} | {r['max_ms']:.1f} "
            f"| {r['loop_stall_ms']:.1f} | {r['kib']:.0f} |"
        )
    doc = {"rows": ROWS, "runs": RUNS, "results": results, "python": sys.version.split()[0]}
    (RESULTS / "bench_console.json").write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
