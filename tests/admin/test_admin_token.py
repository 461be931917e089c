"""The admin token: made 0600, rotated atomically, picked up by a running gateway
without a restart, the old one refused."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from admin_support import Api
from structlog.testing import capture_logs

from sentry.admin.token import TokenFile, ensure_token, new_token, read_token, write_token
from sentry.cli import main
from sentry.testing.gateway import DemoGateway


def test_new_tokens_never_look_like_a_command_line_option(monkeypatch) -> None:
    # secrets.token_urlsafe starts with "-" about once in 64 draws; argparse would
    # then read `--token -abc` as a missing value.
    draws = iter(["-first", "-second", "third"])
    monkeypatch.setattr("sentry.admin.token.secrets.token_urlsafe", lambda n: next(draws))
    assert new_token() == "third"


def test_token_file_follows_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "var" / "token"
    held = TokenFile(path)
    assert path.stat().st_mode & 0o777 == 0o600 and read_token(path) == held.token
    old = held.token
    assert held.matches(old) and not held.matches("guess")
    write_token(path, "new-token")
    assert held.matches("new-token") and not held.matches(old)
    path.write_text("")  # an emptied file keeps the token held
    assert held.matches("new-token")
    assert sorted(os.listdir(path.parent)) == ["token"]  # no temporary files left


def test_ensure_token_keeps_an_existing_token(tmp_path: Path) -> None:
    path = tmp_path / "token"
    write_token(path, "kept")
    assert ensure_token(path) == "kept"


async def test_rotate_against_a_running_gateway(
    api: Api, gateway: DemoGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    old = gateway.gateway.admin_token
    token_file = gateway.gateway.root / "admin-token"
    argv = ["admin", "token", "rotate", "--token-file", str(token_file), "--url", api.base]
    with capture_logs():
        assert await asyncio.to_thread(main, argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"new admin token written to {token_file} (mode 0600)")
    assert out[1] == f"the gateway at {api.base} accepts the new token"
    new = read_token(token_file)
    assert new is not None and new != old
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert (await api.get("/api/preferences", token=old))[0] == 401
    assert (await api.get("/api/preferences", token=new))[0] == 200


async def test_rotate_without_a_gateway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sentry.yaml").write_text(
        "admin: {listen: {port: 9}, token_file: var/token}\n"  # nothing listens on port 9
    )
    assert main(["admin", "token", "rotate", "--config", "sentry.yaml"]) == 0
    out = capsys.readouterr().out
    assert "not checked against a running gateway" in out
    assert read_token(tmp_path / "var" / "token")
