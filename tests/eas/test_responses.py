"""Tests for sentry.eas.responses: refusal bodies byte for byte (eas-protocol.md §4.2),
wipe answers (MS-ASPROV 3.2.5.1.2.2), and the server headers on every answer."""

from __future__ import annotations

import pytest

from sentry.eas.errors import (
    BodyError,
    DeviceIdError,
    EasError,
    MethodError,
    QueryError,
    WbxmlError,
)
from sentry.eas.request import Command
from sentry.eas.responses import (
    REFUSAL_COMMANDS,
    SERVER_HEADERS,
    Response,
    bad_request,
    error,
    forbidden,
    options_response,
    poll_ended,
    refusal,
    remote_wipe,
    wipe_acknowledged,
    wipe_requested,
)
from sentry.eas.status import CommonStatus, WipeAckStatus
from sentry.eas.wbxml import decode

# The "Body for Status 129" column of §4.2, copied verbatim.
TABLE_4_2 = {
    Command.Sync: "03 01 6A 00 45 4E 03 31 32 39 00 01 01",
    Command.FolderSync: "03 01 6A 00 00 07 56 4C 03 31 32 39 00 01 01",
    Command.FolderCreate: "03 01 6A 00 00 07 53 4C 03 31 32 39 00 01 01",
    Command.FolderUpdate: "03 01 6A 00 00 07 55 4C 03 31 32 39 00 01 01",
    Command.FolderDelete: "03 01 6A 00 00 07 54 4C 03 31 32 39 00 01 01",
    Command.GetItemEstimate: "03 01 6A 00 00 06 45 4E 03 31 32 39 00 01 01",
    Command.MoveItems: "03 01 6A 00 00 05 45 4B 03 31 32 39 00 01 01",
    Command.MeetingResponse: "03 01 6A 00 00 08 47 4A 4B 03 31 32 39 00 01 01 01",
    Command.Ping: "03 01 6A 00 00 0D 45 47 03 31 32 39 00 01 01",
    Command.Provision: "03 01 6A 00 00 0E 45 4B 03 31 32 39 00 01 01",
    Command.Search: "03 01 6A 00 00 0F 45 4C 03 31 32 39 00 01 01",
    Command.Settings: "03 01 6A 00 00 12 45 46 03 31 32 39 00 01 01",
    Command.ItemOperations: "03 01 6A 00 00 14 45 4D 03 31 32 39 00 01 01",
    Command.SendMail: "03 01 6A 00 00 15 45 52 03 31 32 39 00 01 01",
    Command.SmartForward: "03 01 6A 00 00 15 46 52 03 31 32 39 00 01 01",
    Command.SmartReply: "03 01 6A 00 00 15 47 52 03 31 32 39 00 01 01",
    Command.ResolveRecipients: "03 01 6A 00 00 0A 45 47 03 31 32 39 00 01 01",
    Command.ValidateCert: "03 01 6A 00 00 0B 45 4A 03 31 32 39 00 01 01",
    Command.Find: "03 01 6A 00 00 19 45 4A 03 31 32 39 00 01 01",
}
WBXML_TYPE = ("Content-Type", "application/vnd.ms-sync.wbxml")
WBXML = (*SERVER_HEADERS, WBXML_TYPE)  # every answer the gateway makes carries these
BLOCKED = CommonStatus.DeviceIsBlockedForThisUser
LEGACY = [
    Command.GetAttachment,
    Command.GetHierarchy,
    Command.CreateCollection,
    Command.DeleteCollection,
    Command.MoveCollection,
]


def test_refusal_commands_are_the_table() -> None:
    assert set(TABLE_4_2) == REFUSAL_COMMANDS
    assert REFUSAL_COMMANDS | set(LEGACY) == set(Command)


@pytest.mark.parametrize("command", list(TABLE_4_2), ids=lambda c: c.value)
def test_refusal_body_129(command: Command) -> None:
    response = refusal(command, "14.1", BLOCKED)
    assert response == Response(200, WBXML, bytes.fromhex(TABLE_4_2[command]))


@pytest.mark.parametrize("command", list(TABLE_4_2), ids=lambda c: c.value)
def test_refusal_body_177(command: Command) -> None:
    expected = bytes.fromhex(TABLE_4_2[command].replace("31 32 39", "31 37 37"))
    assert refusal(command, "16.1", CommonStatus.MaximumDevicesReached).body == expected


@pytest.mark.parametrize("version", ["14.0", "14.1", "16.0", "16.1"])
def test_refusal_from_14_0(version: str) -> None:
    assert refusal(Command.FolderSync, version, BLOCKED).status == 200


@pytest.mark.parametrize("version", ["2.5", "12.0", "12.1", None, "junk"])
@pytest.mark.parametrize("command", [Command.Sync, Command.Provision, Command.Ping])
def test_refusal_before_14_0_is_403(command: Command, version: str | None) -> None:
    assert refusal(command, version, BLOCKED) == Response(403, WBXML, b"")


@pytest.mark.parametrize("command", LEGACY, ids=lambda c: c.value)
def test_refusal_without_wbxml_status_is_403(command: Command) -> None:
    assert refusal(command, "16.1", BLOCKED) == Response(403, WBXML, b"")


@pytest.mark.parametrize("command", [Command.SendMail, Command.SmartReply, Command.SmartForward])
def test_refusal_of_mime_mail_is_403(command: Command) -> None:
    assert refusal(command, "14.1", BLOCKED, mime_body=True) == Response(403, WBXML, b"")


def test_mime_body_flag_only_matters_for_mail() -> None:
    assert refusal(Command.Sync, "14.1", BLOCKED, mime_body=True).status == 200


def test_refusal_body_decodes_to_the_status() -> None:
    root = decode(refusal(Command.MeetingResponse, "14.1", CommonStatus.AccessDenied).body)
    assert root.find_path("Result", "Status") is not None
    assert root.find_path("Result", "Status").text == "130"  # type: ignore[union-attr]


def test_remote_wipe_bodies() -> None:
    full = remote_wipe(account_only=False)
    assert full == Response(200, WBXML, bytes.fromhex("03016A00000E454B033100010C01"))
    account = remote_wipe(account_only=True)
    assert account.body == bytes.fromhex("03016A00000E454B033100013B01")
    assert decode(account.body).find("AccountOnlyRemoteWipe") is not None


def test_wipe_requested_uses_status_140() -> None:
    response = wipe_requested(Command.FolderSync, "14.1")
    assert response.body == bytes.fromhex(
        TABLE_4_2[Command.FolderSync].replace("31 32 39", "31 34 30")
    )


def test_wipe_requested_on_provision_is_the_wipe() -> None:
    assert wipe_requested(Command.Provision, "14.1") == remote_wipe()
    assert wipe_requested(Command.Provision, "16.1", account_only=True) == remote_wipe(True)
    assert wipe_requested(Command.Provision, "12.1") == remote_wipe()


@pytest.mark.parametrize(
    ("command", "version", "mime"),
    [
        (Command.Sync, "12.1", False),
        (Command.Ping, None, False),
        (Command.GetAttachment, "14.1", False),
        (Command.SendMail, "14.1", True),
    ],
)
def test_wipe_requested_without_wbxml_status_is_449(
    command: Command, version: str | None, mime: bool
) -> None:
    response = wipe_requested(command, version, mime_body=mime)
    assert response == Response(449, WBXML, b"")
    assert response.reason == "Retry after sending a PROVISION command"


def test_options_response() -> None:
    response = options_response()
    assert (response.status, response.body) == (200, b"")
    assert response.header("allow") == "OPTIONS,POST"
    assert response.header("MS-ASProtocolVersions") == "2.5,12.0,12.1,14.0,14.1,16.0,16.1"
    assert response.header("MS-ASProtocolCommands") == (
        "Sync,SendMail,SmartForward,SmartReply,GetAttachment,GetHierarchy,CreateCollection,"
        "DeleteCollection,MoveCollection,FolderSync,FolderCreate,FolderDelete,FolderUpdate,"
        "MoveItems,GetItemEstimate,MeetingResponse,Search,Settings,Ping,ItemOperations,"
        "Provision,ResolveRecipients,ValidateCert,Find"
    )
    assert response.header("MS-Server-ActiveSync")


def test_options_response_with_a_subset() -> None:
    response = options_response(["14.1", "16.1"], [Command.Sync, Command.Ping], server_version="x")
    assert response.header("MS-ASProtocolVersions") == "14.1,16.1"
    assert response.header("MS-ASProtocolCommands") == "Sync,Ping"
    assert response.header("MS-Server-ActiveSync") == "x"
    assert response.header("Missing") is None


def test_bad_request() -> None:
    response = bad_request(DeviceIdError("DeviceId 'a\nb' is\tbad"))
    assert (response.status, response.reason) == (400, "Bad Request")
    assert response.headers[:2] == SERVER_HEADERS
    assert response.header("Content-Type") == "text/plain; charset=utf-8"
    assert response.body == b"DeviceIdMissingOrInvalid (108): DeviceId 'a b' is bad\n"
    assert bad_request(QueryError("x")).header("Allow") is None


@pytest.mark.parametrize(
    ("problem", "named"),
    [
        (WbxmlError("truncated", 7), b"InvalidWBXML (102): truncated (at byte 7)\n"),
        (BodyError("no Policies"), b"InvalidXML (103): no Policies\n"),
        (QueryError("bad base64"), b"InvalidContent (101): bad base64\n"),
    ],
)
def test_bad_request_names_the_eas_status(problem: EasError, named: bytes) -> None:
    assert bad_request(problem).body == named


def test_bad_request_method_has_allow() -> None:
    response = bad_request(MethodError("no"))
    assert (response.status, response.header("Allow")) == (405, "OPTIONS,POST")
    assert response.reason == "Method Not Allowed"
    assert response.body == b"no\n"


def test_error_is_one_bounded_line_with_the_server_headers() -> None:
    response = error(503, "no healthy\r\nserver " + "x" * 1000, [("Retry-After", "30")])
    assert (response.status, response.reason) == (503, "Service Unavailable")
    assert response.header("MS-Server-ActiveSync") == "15.1"
    assert response.header("Cache-Control") == "private"
    assert response.header("Retry-After") == "30"
    lines = response.body.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("no healthy server xxx")
    assert len(lines[0]) == 300


def test_every_answer_carries_the_server_headers() -> None:
    answers = [
        refusal(Command.Sync, "14.1", BLOCKED),
        refusal(Command.Sync, "12.1", BLOCKED),
        forbidden(),
        remote_wipe(),
        wipe_acknowledged(WipeAckStatus.Succeeded),
        wipe_requested(Command.Ping, "12.1"),
        poll_ended(Command.Ping),
        poll_ended(Command.Sync),
        options_response(),
        bad_request(QueryError("x")),
        error(413, "too large"),
    ]
    for response in answers:
        assert response.header("MS-Server-ActiveSync") == "15.1", response
        assert response.header("Cache-Control") == "private", response
        assert response.reason, response


# MS-ASPROV 3.2.5.1.2.2: success -> Status 1; failure -> Status 2 and the directive again.
def test_wipe_acknowledged_success_is_status_1_without_a_directive() -> None:
    for account_only in (False, True):
        response = wipe_acknowledged(WipeAckStatus.Succeeded, account_only=account_only)
        assert response == Response(200, WBXML, bytes.fromhex("03016A00000E454B0331000101"))


def test_wipe_acknowledged_failure_repeats_the_directive_with_status_2() -> None:
    full = wipe_acknowledged(WipeAckStatus.Failed)
    assert full == Response(200, WBXML, bytes.fromhex("03016A00000E454B033200010C01"))
    account = decode(wipe_acknowledged(WipeAckStatus.Failed, account_only=True).body)
    assert account.child_text("Status") == "2"
    assert account.find("AccountOnlyRemoteWipe") is not None
    assert account.find("RemoteWipe") is None
