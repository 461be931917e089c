"""The LDAP directory sync at size: 10,000 users from a real slapd into a running gateway.

Method. A slapd (``sentry.testing.slapd``) is loaded offline (``slapadd``)
with N people, each with a UPN, a mail address, two proxyAddresses (one
alias) and extensionAttribute1/2; a gateway (in this process, with its
SQLite store and its admin listener) syncs from it over the unix socket with
1,000-entry pages. Three syncs through the admin API are timed: the first
(every user added), one after a tenth of the users got a new
extensionAttribute1 (changed), and one with nothing to do. While each runs,
a probe task on the gateway's event loop sleeps 1 ms at a time and records
how late it wakes: its worst lateness is the longest the loop was held (a
request arriving then would have waited that long). The report gives each
sync's wall time, its read (LDAP search and mapping, in the worker thread)
and apply (the plan, also in the worker thread under the writer lock, then
one SQLite transaction, the snapshot and revocation on the loop) parts as
the sync reports them, and the probe's worst and 99th-percentile lateness.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["ldap_sync_markdown", "run_ldap_sync"]


def _people(count: int) -> str:
    from sentry.testing.slapd import person_ldif

    return "".join(
        person_ldif(
            f"u{i:06d}",
            upn=f"u{i:06d}@example.com",
            mail=f"u{i:06d}@example.com",
            display=f"User {i}",
            proxies=[f"SMTP:u{i:06d}@example.com", f"smtp:alias{i:06d}@example.com"],
            ext1=f"shared{i % 100}",
            ext2=f"shared{i % 100}@example.com",
        )
        for i in range(count)
    )


class _Probe:
    """Sleeps 1 ms at a time on the loop and records how late each wake-up is."""

    def __init__(self) -> None:
        self.late: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            start = time.monotonic()
            await asyncio.sleep(0.001)
            self.late.append(time.monotonic() - start - 0.001)

    def __enter__(self) -> _Probe:
        self._task = asyncio.ensure_future(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    def summary(self) -> dict[str, float]:
        ordered = sorted(self.late) or [0.0]
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        return {"max_ms": ordered[-1] * 1000, "p99_ms": p99 * 1000, "samples": len(ordered)}


async def _sync(admin_url: str, token: str) -> tuple[dict[str, Any], float, dict[str, float]]:
    def call() -> dict[str, Any]:
        request = urllib.request.Request(
            admin_url + "/api/directory/sync",
            data=b"{}",
            method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=600) as resp:
            answer: dict[str, Any] = json.loads(resp.read())
            return answer

    with _Probe() as probe:
        started = time.monotonic()
        report = await asyncio.to_thread(call)
        wall = time.monotonic() - started
    return report, wall, probe.summary()


async def _run(users: int, work: Path) -> dict[str, Any]:
    from sentry.testing.gateway import DEMO_IDENTITY, DEMO_REALM_ROUTING, demo_gateway, demo_pools
    from sentry.testing.slapd import start_slapd

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t0 = time.monotonic()
    slapd = await start_slapd(work / "slapd", _people(users))
    load_seconds = time.monotonic() - t0
    password = work / "ldap-password"
    password.write_text(slapd.password)
    password.chmod(0o600)
    ldap = {
        "urls": [slapd.ldapi_url], "bind_dn": slapd.bind_dn, "base_dn": slapd.base_dn,
        "bind_password_file": str(password), "filter": "(objectClass=inetOrgPerson)",
        "page_size": 1000, "sync_interval_seconds": 0,
        "attributes": {"custom1": "extensionAttribute1", "custom2": "extensionAttribute2"},
    }  # fmt: skip
    rows = []
    try:
        async with demo_gateway(
            work / "gateway",
            demo_pools(),
            identity=DEMO_IDENTITY,
            routing=DEMO_REALM_ROUTING,
            directory={"ldap": ldap},
            logging={"level": "warning"},
        ) as gw:
            token = gw.gateway.admin_token
            for label in ("initial (all added)", "a tenth changed", "nothing to do"):
                if label == "a tenth changed":
                    await asyncio.to_thread(_change_tenth, slapd, users)
                report, wall, probe = await _sync(gw.admin_url, token)
                rows.append({"sync": label, "wall_s": wall, **_parts(report), "loop": probe})
    finally:
        await slapd.stop()
    return {"scenario": "ldap-sync", "options": {"users": users},
            "slapadd_s": load_seconds, "rows": rows}  # fmt: skip


def _change_tenth(slapd: Any, users: int) -> None:
    for i in range(0, users, 10):
        slapd.modify(f"u{i:06d}", {"extensionAttribute1": [f"moved{i}"]})


def _parts(report: dict[str, Any]) -> dict[str, Any]:
    keys = ("read_seconds", "apply_seconds", "duration_seconds", "entries", "pages", "counts")
    return {k: report[k] for k in keys}


def run_ldap_sync(users: int, work: Path) -> dict[str, Any]:
    """Run the scenario (see the module comment); the JSON-ready result."""
    return asyncio.run(_run(users, work))


def ldap_sync_markdown(r: dict[str, Any]) -> str:
    head = "| sync | wall | read (thread) | plan (thread) + apply | pages | added / changed / "
    head += "unchanged | loop lateness max / p99 |"
    lines = [
        f"{r['options']['users']:,} users (slapadd {r['slapadd_s']:.1f} s)",
        "",
        head,
        "| --- | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for row in r["rows"]:
        c = row["counts"]
        lines.append(
            f"| {row['sync']} | {row['wall_s']:.2f} s | {row['read_seconds']:.2f} s | "
            f"{row['apply_seconds']:.2f} s | {row['pages']} | "
            f"{c['added']:,} / {c['changed']:,} / {c['unchanged']:,} | "
            f"{row['loop']['max_ms']:.0f} / {row['loop']['p99_ms']:.1f} ms |"
        )
    return "\n".join(lines)
