"""Tests for sentry.cli: wbxml decode/encode and eas query, success and failure."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sentry.cli import main

# eas-protocol.md §7 vector 4: FolderSync request, SyncKey 0.
FOLDER_SYNC = bytes.fromhex("03016A000007565203300001 01".replace(" ", ""))
FOLDER_SYNC_XML = '<FolderSync xmlns="FolderHierarchy">\n  <SyncKey>0</SyncKey>\n</FolderSync>\n'
VECTOR_2 = "jRIJBAZBQkMxMjME0gKWSQZpUGhvbmUIEGpkb2VAZXhhbXBsZS5jb20HAQE="


def feed_stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def assert_one_line_error(err: str, fragment: str) -> None:
    assert err.startswith("sentry: error: ")
    assert err.count("\n") == 1
    assert fragment in err
    assert "Traceback" not in err


def test_wbxml_decode_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    feed_stdin(monkeypatch, FOLDER_SYNC)
    assert main(["wbxml", "decode"]) == 0
    assert capsys.readouterr().out == FOLDER_SYNC_XML


def test_wbxml_decode_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "fs.wbxml"
    path.write_bytes(FOLDER_SYNC)
    assert main(["wbxml", "decode", str(path)]) == 0
    assert capsys.readouterr().out == FOLDER_SYNC_XML


def test_wbxml_encode_stdin(
    monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    feed_stdin(monkeypatch, FOLDER_SYNC_XML.encode())
    assert main(["wbxml", "encode", "-"]) == 0
    assert capsysbinary.readouterr().out == FOLDER_SYNC


def test_wbxml_encode_file(tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    path = tmp_path / "fs.xml"
    path.write_text(FOLDER_SYNC_XML)
    assert main(["wbxml", "encode", str(path)]) == 0
    assert capsysbinary.readouterr().out == FOLDER_SYNC


@pytest.mark.parametrize(
    ("argv", "stdin", "fragment"),
    [
        (["wbxml", "decode"], bytes.fromhex("03016A00000756"), "body ends inside"),
        (["wbxml", "decode"], b"", "WBXML header"),
        (["wbxml", "encode"], b"<FolderSync>", "malformed XML"),
        (["wbxml", "encode"], b'<Nope xmlns="AirSync"/>', "unknown tag"),
        (["wbxml", "encode"], b"\xff\xfe", "not UTF-8"),
        (["wbxml", "decode", "/nonexistent/file"], b"", "cannot read /nonexistent/file"),
        (["eas", "query", "Cmd=Sync"], b"", "DeviceId"),
        (["eas", "query", "!!!"], b"", "neither plain"),
        (["eas", "query", VECTOR_2, "--method", "GET"], b"", "GET"),
        (["eas", "query", VECTOR_2, "--header", "no colon"], b"", "Name: value"),
        ([], b"", "required"),
        (["bogus"], b"", "invalid choice"),
        (["wbxml"], b"", "required"),
        (["eas", "query"], b"", "required"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str],
    stdin: bytes,
    fragment: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    feed_stdin(monkeypatch, stdin)
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert_one_line_error(captured.err, fragment)


def test_eas_query_listing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eas", "query", VECTOR_2]) == 0
    lines = dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition(":") for line in capsys.readouterr().out.splitlines())
    )
    assert lines["command"] == "Ping"
    assert lines["protocol_version"] == "14.1"
    assert lines["device_id"] == "ABC123"
    assert lines["policy_key"] == "1234567890"
    assert lines["user_key"] == "jdoe@example.com"  # no realm configured: the UPN as sent
    assert lines["params"] == "SaveInSent=T"
    assert lines["user_agent"] == "-"


def test_eas_query_json_with_headers(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "eas",
        "query",
        "?Cmd=Sync&User=x&DeviceId=validate&DeviceType=Android",
        "--header",
        "MS-ASProtocolVersion: 14.0",
        "--header",
        "Authorization: Basic Q09SUFxKRG9lOnNlY3JldA==",  # CORP\JDoe:secret
    ]
    assert main([*argv, "--json"]) == 0
    out = capsys.readouterr().out
    fields = json.loads(out)
    assert fields["protocol_version"] == "14.0"
    assert fields["user_key"] == "corp\\jdoe"  # no realm configured: NetBIOS domain kept
    assert fields["user_domain"] == "corp"
    assert fields["user_source"] == "authorization"
    assert fields["is_throwaway_device"] is True
    assert "secret" not in out


def test_eas_query_keys_the_user_under_the_configured_realms(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "sentry.yaml"
    config.write_text(
        "identity:\n"
        "  realms: [{name: example.com, netbios: [CORP]}]\n"
        "  default_realm: example.com\n"
    )
    basic = "Authorization: Basic Q09SUFxKRG9lOnNlY3JldA=="  # CORP\JDoe:secret
    argv = ["eas", "query", "?Cmd=Sync&DeviceId=d1&DeviceType=x", "--header", basic]
    assert main([*argv, "--config", str(config), "--json"]) == 0
    fields = json.loads(capsys.readouterr().out)
    assert (fields["user_key"], fields["user_domain"]) == ("jdoe@example.com", "example.com")


def test_eas_query_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eas", "query", "", "--method", "OPTIONS", "--json"]) == 0
    fields = json.loads(capsys.readouterr().out)
    assert (fields["method"], fields["command"], fields["query_form"]) == ("OPTIONS", None, "none")


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "wbxml" in capsys.readouterr().out


def test_python_m_sentry_wbxml_decode() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sentry", "wbxml", "decode"],
        input=FOLDER_SYNC,
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert (result.returncode, result.stderr) == (0, b"")
    assert result.stdout.decode() == FOLDER_SYNC_XML


def test_python_m_sentry_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sentry", "wbxml", "decode"],
        input=b"\x03\x01",
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2
    assert_one_line_error(result.stderr.decode(), "sentry: error:")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from sentry.buildinfo import python_version, version

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"sentry {version()} (Python {python_version()})\n"


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _parsers(child)


def _all_parsers() -> list[argparse.ArgumentParser]:
    from sentry.cli import build_parser
    from sentry.testing.demo_cli import backend_parser
    from sentry.testing.demo_client import client_parser

    return [*_parsers(build_parser()), backend_parser(), client_parser()]


def test_every_command_says_what_it_does_and_every_option_has_help() -> None:
    parsers = _all_parsers()
    assert len(parsers) > 50
    for parser in parsers:
        assert parser.description and parser.description.strip(), parser.prog
        for action in parser._actions:
            if isinstance(
                action, argparse._HelpAction | argparse._VersionAction | argparse._SubParsersAction
            ):
                continue  # a subcommand's help is its parser's description, checked above
            assert action.help and action.help.strip(), (parser.prog, action.dest)


def test_every_meaningful_default_is_shown() -> None:
    for parser in _all_parsers():
        formatter = parser._get_formatter()
        for action in parser._actions:
            if action.default in (None, False, [], argparse.SUPPRESS) or not action.option_strings:
                continue
            shown = formatter._expand_help(action)  # type: ignore[attr-defined]
            assert "default" in shown, (parser.prog, action.dest, shown)


def test_admin_help_shows_the_default_page_size(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["admin", "list", "--help"]) == 0
    out = capsys.readouterr().out
    assert "The ActiveSync association list (one page)." in out
    assert "rows per page (at most 1000) (default: 100)" in " ".join(out.split())


def test_a_closed_pipe_ends_quietly() -> None:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written (like `| head` after a line)
    with os.fdopen(write, "wb") as out:
        result = subprocess.run(
            [sys.executable, "-m", "sentry", "eas", "query", VECTOR_2],
            stdout=out,
            stderr=subprocess.PIPE,
            check=False,
            timeout=60,
        )
    assert (result.returncode, result.stderr) == (141, b"")
