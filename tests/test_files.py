"""``sentry.files``: state files created 0600 and directories 0700, whatever the umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sentry.files import ensure_private_dir, loose_mode, open_private, write_private


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def no_umask():
    old = os.umask(0)
    yield
    os.umask(old)


def test_missing_directories_are_created_0700_and_existing_ones_left_alone(tmp_path):
    (tmp_path / "shared").mkdir(mode=0o755)
    ensure_private_dir(tmp_path / "shared" / "a" / "b")
    assert mode(tmp_path / "shared") == 0o755
    assert mode(tmp_path / "shared" / "a") == 0o700
    assert mode(tmp_path / "shared" / "a" / "b") == 0o700
    ensure_private_dir(tmp_path / "shared" / "a" / "b")  # idempotent


def test_open_private_creates_0600_appends_and_keeps_an_operators_mode(tmp_path):
    path = tmp_path / "log" / "s.log"
    with open_private(path) as fh:
        fh.write("one\n")
    with open_private(path) as fh:
        fh.write("two\n")
    assert path.read_text() == "one\ntwo\n"
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    path.chmod(0o640)  # e.g. for a log shipper's group
    with open_private(path, "w") as fh:
        fh.write("three\n")
    assert path.read_text() == "three\n" and mode(path) == 0o640
    assert loose_mode(path) == 0o640
    with pytest.raises(FileExistsError):
        open_private(path, "x")


def test_write_private_is_atomic_and_0600(tmp_path):
    path = tmp_path / "backups" / "s.db"
    write_private(path, b"first")
    write_private(path, b"second")
    assert path.read_bytes() == b"second"
    assert mode(path) == 0o600 and loose_mode(path) is None
    assert sorted(p.name for p in path.parent.iterdir()) == ["s.db"]  # no temporary left
