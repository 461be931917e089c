"""contrib/: the systemd unit runs real commands, is sandboxed, has room for held
Pings, and systemd itself accepts it (when systemd-analyze is installed)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sentry.cli import build_parser

CONTRIB = Path(__file__).parents[1] / "contrib"
HELD_PINGS_PER_NODE = 100_000


def _directives(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_the_unit_has_room_for_held_pings_and_a_sandbox() -> None:
    unit = _directives(CONTRIB / "sentry.service")
    assert int(unit["LimitNOFILE"][0]) >= 2 * HELD_PINGS_PER_NODE  # two sockets per held Ping
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "UMask": "0077",
        "RestartPreventExitStatus": "2",
        "ExecReload": "/bin/kill -HUP $MAINPID",
    }.items():
        assert unit[key] == [value], key
    assert "ProcSubset" not in unit  # the process metrics need /proc/stat


def test_the_unit_runs_commands_the_cli_accepts() -> None:
    unit = _directives(CONTRIB / "sentry.service")
    parser = build_parser()
    for key in ("ExecStartPre", "ExecStart"):
        argv = shlex.split(unit[key][0])
        assert argv[0].endswith("/bin/sentry")
        args = parser.parse_args(argv[1:])
        assert args.handler is not None and str(args.config) == "/etc/sentry/sentry.yaml"
    assert shlex.split(unit["ExecStartPre"][0])[-3:] == [
        "--check",
        "--config",
        "/etc/sentry/sentry.yaml",
    ]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    sentry = Path(sys.executable).with_name("sentry")
    text = (CONTRIB / "sentry.service").read_text()
    unit = tmp_path / "sentry.service"
    unit.write_text(text.replace("/opt/sentry/.venv/bin/sentry", str(sentry)))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_logrotate_reloads_instead_of_truncating() -> None:
    text = (CONTRIB / "sentry.logrotate").read_text()
    rules = [line.strip() for line in text.splitlines() if not line.startswith("#")]
    assert "systemctl reload sentry.service >/dev/null 2>&1 || true" in rules
    assert "create 0600 sentry sentry" in rules and "copytruncate" not in rules
