"""``sentry admin ...`` against a running gateway: tables for people, --json for
scripts, the target from the config file or flags, exit statuses 0/1/2."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from admin_support import device
from structlog.testing import capture_logs

from sentry.cli import main
from sentry.testing.faulty import refusing_port, url_of
from sentry.testing.gateway import DemoGateway


class Cli:
    """Runs ``sentry admin`` in a worker thread (it blocks on urllib)."""

    def __init__(self, gw: DemoGateway, capsys: pytest.CaptureFixture[str]) -> None:
        self.url = gw.admin_url
        self.token = gw.gateway.admin_token
        self.capsys = capsys

    async def run(self, *argv: str, target: bool = True) -> tuple[int, str, str]:
        flags = ["--url", self.url, "--token", self.token] if target else []
        code = await asyncio.to_thread(main, ["admin", *argv, *flags])
        out, err = self.capsys.readouterr()
        return code, out, err

    async def json(self, *argv: str) -> Any:
        code, out, err = await self.run(*argv, "--json")
        assert code == 0, err
        return json.loads(out)


@pytest.fixture
def cli(gateway: DemoGateway, capsys: pytest.CaptureFixture[str]) -> Iterator[Cli]:
    with capture_logs():  # the gateway's log lines would mix with the CLI's output
        yield Cli(gateway, capsys)


async def test_target_from_the_config_file(
    cli: Cli, gateway: DemoGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = urlsplit(gateway.admin_url).port
    config = tmp_path / "sentry.yaml"
    config.write_text(
        f"admin:\n  listen: {{host: 127.0.0.1, port: {port}}}\n  token_file: admin-token\n"
    )
    monkeypatch.chdir(tmp_path)  # token_file is relative to the working directory
    code, out, _ = await cli.run("prefs", "show", "--config", str(config), target=False)
    assert code == 0 and "auto_block_unregistered: no" in out
    token_file = tmp_path / "admin-token"
    code, out, _ = await cli.run(
        "pools", "--url", cli.url, "--token-file", str(token_file), target=False
    )
    assert code == 0 and "exchange" in out and "routing:" in out


async def test_associations_list_show_actions_and_bulk(
    cli: Cli, gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    await device(gateway, session, "bob", "CLIDEV1").provision()
    await device(gateway, session, "bob", "CLIDEV2").provision()
    code, out, _ = await cli.run("list", "--user", "bo")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:4] == ["DEVICE", "ID", "USER", "TYPE"]
    assert "CLIDEV1" in lines[1] and "allowed" in lines[1] and lines[-1] == "rows 1-2 of 2"
    code, out, _ = await cli.run("block", "CLIDEV1", "bob", "--note", "lost", "--actor", "jane")
    assert code == 0 and "blocked (reasons MANUAL)" in out
    page = await cli.json("list", "--state", "blocked")
    assert [(r["device_id"], r["override"]["actor"]) for r in page["items"]] == [
        ("CLIDEV1", "jane")
    ]
    code, out, _ = await cli.run("show", "CLIDEV1", "bob")
    assert "decision:" in out and "status: 129" in out and "history:" in out
    code, out, _ = await cli.run("bulk", "allow", "--user", "bob", "--note", "back", "--dry-run")
    assert out.splitlines() == [
        "matched 2, would change 2, skipped 0 (dry run: nothing changed)",
        "  would allow CLIDEV1 / bob",
        "  would allow CLIDEV2 / bob",
    ]
    answer = await cli.json("bulk", "block", "--device-id", "clidev2", "--note", "x")
    assert answer["changed"] == [{"device_id": "CLIDEV2", "user": "bob"}]
    code, out, _ = await cli.run("wipe", "CLIDEV2", "bob", "--note", "x", "--account-only")
    assert code == 0 and "wipe_pending" in out
    code, out, _ = await cli.run("remove", "CLIDEV2", "bob", "--note", "x")
    assert code == 0 and out.strip().endswith("removed")


async def test_directory_push_and_prefs_commands(cli: Cli) -> None:
    await cli.run("users", "set", "alice", "--email", "alice@example.com", "--custom1", "shared")
    user = await cli.json("users", "set", "alice", "--custom2", "shared@example.com")
    assert (user["email"], user["custom1"], user["custom2"]) == (
        "alice@example.com",  # kept: fields not given are not cleared
        "shared",
        "shared@example.com",
    )
    code, out, _ = await cli.run("users", "list")
    assert "PRINCIPAL" in out and "alice@example.com" in out
    assert (await cli.run("users", "set", "shared", "--email", "shared@example.com"))[0] == 0
    setting = "exchange-settings set second --user-name $USER_CUSTOM1$ --email $USER_CUSTOM2$"
    code, _, _ = await cli.run(*setting.split())
    assert code == 0
    assert (await cli.run("labels", "set", "two", "--setting", "second"))[0] == 0
    register = "devices register ph1 --owner alice --platform ios --eas-id CLIPH1 --label two"
    code, out, _ = await cli.run(*register.split())
    assert code == 0 and "eas_device_ids: CLIPH1" in out
    detail = await cli.json("devices", "show", "ph1")
    assert [m["user_name"] for m in detail["pushed"]] == ["shared"]
    code, out, _ = await cli.run("devices", "compliance", "ph1", "--violation", "passcode")
    assert code == 0 and "compliant: no" in out
    assert (await cli.json("devices", "compliance", "ph1"))["device"]["compliant"] is True
    code, _, err = await cli.run("devices", "labels", "ph1")
    assert code == 2 and "give --add or --remove" in err  # never replaced as a whole
    assert (await cli.json("devices", "labels", "ph1", "--remove", "two"))["device"]["labels"] == []
    assert (await cli.json("devices", "retire", "ph1", "--note", "old"))["device"]["retired"]
    code, out, _ = await cli.run("devices", "list", "--owner", "alice")
    assert "ph1" in out and "rows 1-1 of 1" in out
    code, out, _ = await cli.run("exchange-settings", "list")
    assert "$USER_CUSTOM1$" in out
    assert (await cli.run("exchange-settings", "delete", "second"))[0] == 1  # label uses it
    assert (await cli.run("labels", "delete", "two"))[1].strip() == "deleted two"
    code, out, _ = await cli.run("labels", "list")
    assert out.strip() == "NAME  SETTINGS  DEVICES"
    prefs = await cli.json("prefs", "set", "--auto-block", "on", "--max-devices-per-mailbox", "2")
    assert prefs["auto_block_unregistered"] and prefs["max_devices_per_mailbox"] == 2
    prefs = await cli.json("prefs", "set", "--max-devices-per-mailbox", "none")
    assert prefs["max_devices_per_mailbox"] is None and prefs["auto_block_unregistered"]
    assert (await cli.run("users", "delete", "shared"))[1].strip() == "deleted user shared"
    code, out, _ = await cli.run("audit", "--limit", "3")
    assert out.splitlines()[0].split() == ["AT", "ACTOR", "ACTION", "TARGET", "NOTE"]
    assert "delete_user" in out and "rows 1-3 of" in out


async def test_errors_exit_1_for_refusals_and_2_for_usage(cli: Cli, tmp_path: Path) -> None:
    code, out, err = await cli.run("block", "NODEVICE", "bob", "--note", "x")
    assert (code, out) == (1, ""), err
    assert err.startswith("sentry: error: HTTP 404: no association")
    bad = ["exchange-settings", "set", "bad", "--user-name", "$NOPE$", "--email", "x"]
    code, out, err = await cli.run(*bad, "--json")
    assert code == 1 and json.loads(out)["fields"]["user_name"].startswith("unknown variable")
    assert "  user_name: unknown variable $NOPE$" in err
    code, _, err = await cli.run(
        "prefs", "show", "--url", cli.url, "--token", "wrong", target=False
    )
    assert code == 1 and "HTTP 401" in err
    with refusing_port() as closed:  # not a port assumed unused: one held, never listening
        code, _, err = await cli.run("pools", "--url", url_of(closed), "--token", "t", target=False)
    assert code == 2 and "cannot reach the admin API" in err
    code, _, err = await cli.run("pools", "--config", str(tmp_path / "none.yaml"), target=False)
    assert code == 2 and "not found" in err
    no_token = ["--url", cli.url, "--token-file", str(tmp_path / "t")]
    code, _, err = await cli.run("pools", *no_token, target=False)
    assert code == 2 and "cannot read the admin token" in err
    code, _, err = await cli.run("prefs", "set", "--max-devices-per-mailbox", "many")
    assert code == 2 and "'many'" in err
    code, _, err = await cli.run("block", "DEV", "bob")  # --note is required
    assert code == 2 and "--note" in err


async def test_backend_types_aliases_and_identity_filters(
    cli: Cli, gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    bob = device(gateway, session, "bob", "CLIDEV3")
    await bob.provision()
    stranger = device(gateway, session, "bob", "CLIDEV4")
    stranger.password = "wrong"
    assert (await stranger.post("Sync", b"")).status == 401
    await device(gateway, session, "bob", "validate").provision()
    code, out, _ = await cli.run("list", "--user", "bob")
    flags = {line.split()[0]: line for line in out.splitlines()[1:-1]}
    assert "unverified" in flags["CLIDEV4"] and "throwaway" in flags["VALIDATE"]
    page = await cli.json("list", "--verified", "no")
    assert [r["device_id"] for r in page["items"]] == ["CLIDEV4"]
    page = await cli.json("list", "--throwaway", "yes")
    assert [r["device_id"] for r in page["items"]] == ["VALIDATE"]
    code, out, _ = await cli.run("backend-types")
    assert code == 0 and out.splitlines()[0].split()[:3] == ["SCOPE", "TYPE", "SET"]
    assert "eas:CLIDEV3  exchange  CLIDEV3/bob" in out
    code, out, err = await cli.run("reset-backend-type", "clidev3")
    assert code == 2 and "--note" in err  # the note is mandatory
    code, out, _ = await cli.run(
        "reset-backend-type", "clidev3", "--backend-type", "gmail", "--note", "moved"
    )
    assert code == 0 and out.strip() == "eas:CLIDEV3: gmail; held polls ended: 0"
    code, out, err = await cli.run("reset-backend-type", "validate", "--note", "x")
    assert code == 1 and "many phones" in err
    await cli.run("users", "set", "bob", "--email", "bob@example.com", "--alias", "robert")
    user = await cli.json("users", "set", "bob", "--display-name", "Bob")
    assert user["aliases"] == ["robert"]  # kept when not given
    assert (await cli.json("users", "show", "ROBERT"))["principal"] == "bob"
    code, _, err = await cli.run("users", "set", "rob", "--alias", "robert")
    assert code == 1 and "already names user 'bob'" in err
    await cli.run("devices", "register", "bobphone", "--owner", "bob", "--eas-id", "CLIDEV3")
    answer = await cli.json("devices", "reset-backend-type", "bobphone", "--note", "fresh")
    assert answer["established"]["backend_type"] == "exchange"  # bob's verified mailbox


async def test_label_membership_changes_only_when_asked(cli: Cli) -> None:
    for device_id in ("m1", "m2", "m3"):
        assert (await cli.run("devices", "register", device_id, "--owner", "alice"))[0] == 0
    await cli.run("exchange-settings", "set", "s1", "--user-name", "$USERID$", "--email", "$EMAIL$")
    label = await cli.json("labels", "set", "team", "--setting", "s1", "--add", "m1", "--add", "m2")
    assert (label["settings"], label["devices"]) == (["s1"], ["m1", "m2"])
    label = await cli.json("labels", "set", "team")  # nothing given: nothing replaced
    assert (label["settings"], label["devices"]) == (["s1"], ["m1", "m2"])
    label = await cli.json("labels", "add-device", "team", "m3", "--note", "joined")
    assert label["devices"] == ["m1", "m2", "m3"]
    label = await cli.json("labels", "remove-device", "team", "m1")
    assert label["devices"] == ["m2", "m3"]
    answer = await cli.json("devices", "labels", "m1", "--add", "team")
    assert answer["device"]["labels"] == ["team"]  # one membership, the same on both sides
    code, out, _ = await cli.run("labels", "list")
    assert out.splitlines()[1].split() == ["team", "s1", "m1,m2,m3"]
    assert "labels: team" in (await cli.run("devices", "show", "m2"))[1]
    code, _, err = await cli.run("labels", "add-device", "team", "nope")
    assert code == 1 and "no such managed device: nope" in err


async def test_bulk_needs_a_filter_or_all(cli: Cli) -> None:
    code, _, err = await cli.run("bulk", "block", "--note", "x")
    assert code == 2 and "--all" in err
    code, _, err = await cli.run("bulk", "block", "--note", "x", "--all", "--user", "bob")
    assert code == 2
    code, out, _ = await cli.run("bulk", "block", "--note", "x", "--all", "--dry-run")
    assert code == 0 and out.startswith("matched 0, would change 0")


async def test_rules_and_quarantine_commands(
    cli: Cli, gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    code, out, err = await cli.run(
        "rules", "add", "old-eas", "protocol_version", "lt", "14.0", "quarantine", "--note", "old"
    )
    assert code == 0 and "position: 1" in out, err
    code, out, _ = await cli.run("rules", "add", "pads", "device_type", "equals", "iPad", "block",
                                 "--position", "1")  # fmt: skip
    assert code == 0
    code, out, _ = await cli.run("rules", "list")
    lines = out.splitlines()
    assert lines[0].split()[:6] == ["#", "NAME", "FIELD", "MATCH", "VALUE", "ACTION"]
    assert [line.split()[1] for line in lines[1:]] == ["pads", "old-eas"]
    assert (await cli.run("rules", "move", "old-eas", "1"))[0] == 0
    names = [r["name"] for r in (await cli.json("rules", "list"))["items"]]
    assert names == ["old-eas", "pads"]
    code, _, err = await cli.run("rules", "add", "bad", "os", "lt", "14.0", "block")
    assert code == 1 and "compares versions" in err
    await device(gateway, session, "alice", "OLDPDA1", version="12.1").post("FolderSync")
    code, out, _ = await cli.run("quarantine", "list")
    assert code == 0 and "OLDPDA1" in out and "old-eas" in out and "12.1" in out
    assert (await cli.run("allow", "OLDPDA1", "alice", "--note", "ok"))[0] == 0
    assert (await cli.json("quarantine", "list"))["total"] == 0
    code, out, _ = await cli.run("rules", "remove", "pads")
    assert code == 0 and "removed pads" in out
