"""The README's admin walk-through, run as a script in the order printed, against a
gateway with the demo accounts of the shipped configuration."""

from __future__ import annotations

import asyncio
import re
import shlex
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from sentry.cli import main
from sentry.settings import load_settings
from sentry.testing.demo_cli import parse_users
from sentry.testing.gateway import DemoGateway, PoolSpec, demo_gateway
from sentry.testing.state import BackendConfig

ROOT = Path(__file__).parents[2]


def walkthrough() -> list[str]:
    """The command lines of the ``sh`` block in the section "Admin API and CLI"."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Admin API and CLI") :]
    section = section[: section.index("\n## ", 5)]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match is not None, "the walk-through block is missing"
    return [line for line in match.group(1).splitlines() if line.startswith(".venv/bin/sentry ")]


@pytest.fixture
async def shipped(tmp_path: Path) -> AsyncIterator[DemoGateway]:
    """A gateway with the pools, routing and demo accounts of config/sentry.yaml."""
    config = load_settings(ROOT / "config" / "sentry.yaml")
    types = {p.name: p.type for p in config.pools}
    pools = {
        b.pool: PoolSpec(types[b.pool], (BackendConfig(types[b.pool], parse_users(b.users)),))
        for b in config.demo.backends
    }
    routing = {"default": config.routing.default, "users": dict(config.routing.users)}
    async with demo_gateway(tmp_path / "gw", pools, routing=routing) as gw:
        yield gw


async def test_the_walkthrough_runs_in_the_order_printed(
    shipped: DemoGateway,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = shipped.admin_url.rsplit(":", 1)[1]
    token = shipped.gateway.root / "admin-token"
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "sentry.yaml").write_text(
        f"admin: {{listen: {{host: 127.0.0.1, port: {port}}}, token_file: {token}}}\n"
    )
    monkeypatch.chdir(tmp_path)  # the commands find config/sentry.yaml as printed
    lines = walkthrough()
    assert len(lines) >= 10
    outputs = []
    capsys.readouterr()
    for line in lines:
        argv = shlex.split(line, comments=True)[1:]
        if argv[0] == "demo-client":
            argv += ["--url", shipped.url]
        with capture_logs():
            code = await asyncio.to_thread(main, argv)
        out, err = capsys.readouterr()
        expected = 1 if "refused" in line.partition("#")[2] else 0
        assert code == expected, (line, out, err)
        outputs.append(out)
    by_line = dict(zip(lines, outputs, strict=True))
    show = next(out for line, out in by_line.items() if "devices show" in line)
    assert "user_name: shared" in show and "labels: sales" in show
    refused = next(out for line, out in by_line.items() if "refused" in line)
    assert "Status 129" in refused
    listed = next(out for line, out in by_line.items() if "admin list" in line)
    assert "DEMOPHONE0001" in listed and "blocked" in listed
    assert outputs[-1].startswith("Provision: ok") and "Inbox:" in outputs[-1]
