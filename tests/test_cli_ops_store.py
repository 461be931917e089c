"""``sentry run`` as a real process with its store: one gateway per database file,
one line and exit 2 for a store it cannot use, private files, backups while it runs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from sentry.store.sqlite import SqliteStore
from sentry.testing.conversation import Conversation
from sentry.testing.files import CannotMakeReadOnly, damage_database, read_only

CONFIG = """
gateway:
  listen: {host: 127.0.0.1, port: 0}
  tls: {enabled: false}
admin: {listen: {host: 127.0.0.1, port: 0}, token_file: var/token}
store: {kind: sqlite, path: var/s.db}
pools: [{name: exchange, type: exchange, servers: ["http://127.0.0.1:9"]}]
routing: {default: exchange}
logging: {format: json}
"""


def start(root: Path, config: str = CONFIG) -> subprocess.Popen[str]:
    (root / "sentry.yaml").write_text(config)
    return subprocess.Popen(
        [sys.executable, "-m", "sentry", "run", "--config", "sentry.yaml"],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        umask=0,  # files must be private by their creation mode, whatever the umask
    )


def run_to_exit(root: Path) -> tuple[int, str]:
    proc = start(root)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return proc.returncode, err


@contextmanager
def running(root: Path, config: str = CONFIG) -> Iterator[subprocess.Popen[str]]:
    """A gateway process, once it has logged that it started; SIGTERM at the end."""
    proc = start(root, config)
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            if '"event": "started"' in line:
                break
        else:
            raise AssertionError(f"sentry run exited: {proc.wait()} {proc.stderr.read()}")  # type: ignore[union-attr]
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def seeded(root: Path) -> Path:
    path = root / "var" / "s.db"

    async def fill() -> None:
        store = await SqliteStore.open(path)
        conv = Conversation()
        for i in range(40):
            conv.request(f"user{i}", f"DEV{i}")
        for changes in conv.log:
            await store.apply(changes)
        await store.close()

    asyncio.run(fill())
    return path


def assert_one_line_error(code: int, err: str, *phrases: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("sentry: error: store.path: "), err
    for phrase in phrases:
        assert phrase in lines[0], err


def _directory(root: Path) -> None:
    (root / "var" / "s.db").mkdir(parents=True)


def _not_a_database(root: Path) -> None:
    (root / "var").mkdir()
    (root / "var" / "s.db").write_text("not a database, but 1 KiB of text\n" * 30)


def _damaged(root: Path) -> None:
    damage_database(seeded(root))


BROKEN: dict[str, tuple[Callable[[Path], None], str]] = {
    "directory": (_directory, "is a directory"),
    "not a database": (_not_a_database, "is not an SQLite database"),
    "damaged": (_damaged, "is damaged"),
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_an_unusable_store_is_one_line_and_exit_2(tmp_path: Path, kind: str) -> None:
    make, phrase = BROKEN[kind]
    make(tmp_path)
    code, err = run_to_exit(tmp_path)
    assert_one_line_error(code, err, "var/s.db", phrase)


def test_a_read_only_store_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = seeded(tmp_path)
    try:
        with read_only(path):
            code, err = run_to_exit(tmp_path)
    except CannotMakeReadOnly as exc:
        pytest.skip(str(exc))
    assert_one_line_error(code, err, "var/s.db", "not writable")


def test_a_directory_that_refuses_files_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "var").mkdir()
    try:
        with read_only(tmp_path / "var"):
            code, err = run_to_exit(tmp_path)
    except CannotMakeReadOnly as exc:
        pytest.skip(str(exc))
    assert_one_line_error(code, err, "var is not writable")


def test_a_second_gateway_on_the_same_file_refuses_to_start(tmp_path: Path) -> None:
    with running(tmp_path) as first:
        second = tmp_path / "second"
        second.mkdir()
        config = CONFIG.replace("var/s.db", str(tmp_path / "var" / "s.db"))
        (second / "sentry.yaml").write_text(config)
        done = subprocess.run(
            [sys.executable, "-m", "sentry", "run", "--config", "sentry.yaml"],
            cwd=second,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert_one_line_error(
            done.returncode, done.stderr, f"in use by another process (pid {first.pid})"
        )
        assert first.poll() is None  # the first one is unaffected


def test_state_and_log_files_are_private_and_backups_work_while_running(tmp_path: Path) -> None:
    config = CONFIG.replace("logging: {format: json}", "logging: {format: json, file: log/s.log}")
    (tmp_path / "log").mkdir()  # the log directory must exist; var/ the gateway makes
    with running_with_log(tmp_path, config):
        for name in ("var/s.db", "var/s.db-wal", "var/s.db-shm", "var/token", "log/s.log"):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
        assert stat.S_IMODE((tmp_path / "var").stat().st_mode) == 0o700
        # another process (this one) reads and backs up the locked database
        src, dst = sqlite3.connect(tmp_path / "var" / "s.db"), sqlite3.connect(tmp_path / "b.db")
        try:
            src.backup(dst)
            tables = {r[0] for r in dst.execute("SELECT name FROM sqlite_master")}
        finally:
            src.close()
            dst.close()
        assert "associations" in tables


@contextmanager
def running_with_log(root: Path, config: str) -> Iterator[None]:
    """A gateway logging to ``log/s.log``: started once the file says so."""
    proc = start(root, config)
    log = root / "log" / "s.log"
    try:
        for _ in range(3000):
            if log.exists() and any(
                json.loads(line).get("event") == "started" for line in log.read_text().splitlines()
            ):
                break
            assert proc.poll() is None, proc.communicate()
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.01)  # a bounded pause that ends early if it exits
        else:
            raise AssertionError("the gateway did not log that it started")
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert os.path.exists(log)
