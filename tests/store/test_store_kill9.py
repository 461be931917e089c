"""design.md §5.8: nothing an admin did is lost across a kill -9 of the gateway.

A real subprocess opens the SQLite store and applies admin changes (Allow,
Block, Wipe, round robin over several associations) one transaction at a
time, printing a line after each commit returns. The test reads a random
number of lines, kills the process with SIGKILL (sometimes mid-transaction),
reopens the store and checks that every acknowledged change is there and
that each row reflects the newest of its audit entries.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sentry.model import AssociationKey
from sentry.store.sqlite import SqliteStore
from sentry.testing.conversation import Conversation

WRITER = r"""
import asyncio, sys
from sentry.policy import admin
from sentry.store.sqlite import SqliteStore

ACTIONS = ("allow", "block", "wipe")

async def main(path: str, start: int) -> None:
    store = await SqliteStore.open(path)
    snapshot = await store.load()
    keys = sorted(snapshot.keys())
    i = start
    while True:
        key = keys[i % len(keys)]
        action = ACTIONS[(i // len(keys)) % len(ACTIONS)]
        note = f"change {i}"
        changes = getattr(admin, action)(snapshot, key, note=note, actor="kill9", now=1e9 + i)
        await store.apply(changes)
        snapshot.apply(changes)
        print(i, action, key.device_id, key.user, flush=True)
        i += 1

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""

USERS = ("ann", "bob", "cat", "dan", "eve")


async def seed(path: Path) -> None:
    conv = Conversation()
    for n, user in enumerate(USERS):
        conv.request(user, f"DEV{n % 3}")
    store = await SqliteStore.open(path)
    for changes in conv.log:
        await store.apply(changes)
    await store.close()


def run_writer(path: Path, start: int, lines: int, rng: random.Random) -> list[str]:
    """Start the writer, read ``lines`` acknowledgements, SIGKILL it."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(start)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    acknowledged = []
    try:
        for _ in range(lines):
            line = proc.stdout.readline()
            assert line, f"writer exited early with {proc.wait()}"
            acknowledged.append(line.split())
        time.sleep(rng.random() * 0.003)  # land some kills inside a transaction
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    return acknowledged


async def check(path: Path, acknowledged: list[list[str]]) -> int:
    """Assert every acknowledged change survived; return the next change number."""
    store = await SqliteStore.open(path)
    snapshot = await store.load()
    audit, _ = await store.audit(0, 100_000)
    await store.close()
    notes = {entry.note for entry in audit}
    for number, *_ in acknowledged:
        assert f"change {number}" in notes, f"acknowledged change {number} was lost"
    newest: dict[str, int] = {}
    for entry in audit:
        target = entry.target.removeprefix("association:")
        newest[target] = max(newest.get(target, -1), int(entry.note.split()[1]))
    for target, number in newest.items():
        device, user = target.split("/")
        override = snapshot.get(AssociationKey(device, user)).override
        assert override is not None and override.note == f"change {number}"
    return max(int(n.split()[1]) for n in notes) + 1


@pytest.mark.parametrize("seed_value", [1, 2])
def test_acknowledged_admin_changes_survive_sigkill(tmp_path, seed_value):
    rng = random.Random(seed_value)
    path = tmp_path / "kill9.db"
    asyncio.run(seed(path))
    start = 0
    for _round in range(3):
        acknowledged = run_writer(path, start, rng.randint(3, 40), rng)
        start = asyncio.run(check(path, acknowledged))
        assert start >= int(acknowledged[-1][0]) + 1
