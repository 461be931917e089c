"""Tests for sentry.eas.request: both query forms, headers, identity, and errors."""

from __future__ import annotations

import base64
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from sentry.eas.errors import (
    CommandError,
    DeviceIdError,
    DeviceTypeError,
    EasError,
    MethodError,
    QueryError,
    RequestError,
    UserError,
    VersionError,
)
from sentry.eas.request import Command, EasRequest, QueryForm, parse_request
from sentry.eas.status import CommonStatus
from sentry.model import Realm, Realms

# eas-protocol.md §7, vectors 1-3.
VECTOR_1 = "jAAJBAp2MTQwRGV2aWNlAApTbWFydFBob25l"
VECTOR_2 = "jRIJBAZBQkMxMjME0gKWSQZpUGhvbmUIEGpkb2VAZXhhbXBsZS5jb20HAQE="
VECTOR_3 = "oQkJBBBvJMrVmaW/GmkCRrjGj66NAAtXaW5kb3dzTWFpbA=="
GUID_HEX = "6f24cad599a5bf1a690246b8c68fae8d"
PLAIN = "Cmd=Sync&User=jdoe&DeviceId=Abc123&DeviceType=iPhone"


def basic(credentials: str, charset: str = "utf-8") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(credentials.encode(charset)).decode()}


def blob(
    *,
    version: int = 141,
    command: int = 0,
    device: bytes = b"ABC123",
    key: bytes = b"",
    device_type: bytes = b"iPhone",
    params: bytes = b"\x08\x04jdoe",
) -> str:
    """A base64 query with the §1.3.1 layout (lengths computed, not checked)."""
    raw = bytes([version, command, 0x09, 0x04, len(device)]) + device
    raw += bytes([len(key)]) + key + bytes([len(device_type)]) + device_type + params
    return base64.b64encode(raw).decode()


def field(request: EasRequest, path: str) -> Any:
    value: Any = request
    for part in path.split("."):
        value = getattr(value, part)
    return value


V2_FIELDS = {
    "protocol_version": "14.1",
    "command": Command.Ping,
    "locale": 0x0409,
    "device_id": "ABC123",
    "device_id_raw": "ABC123",
    "policy_key": 1234567890,
    "device_type": "iPhone",
    "query_user": "jdoe@example.com",
    "user.key": "jdoe@example.com",
    "user.domain": "example.com",
    "params": {"SaveInSent": "T"},
    "query_form": QueryForm.BASE64,
}
V3_FIELDS = {
    "protocol_version": "16.1",
    "command": Command.FolderSync,
    "device_id": GUID_HEX.upper(),
    "device_id_raw": GUID_HEX,
    "device_type": "WindowsMail",
    "policy_key": None,
}

PARSED = [
    pytest.param(
        "POST",
        VECTOR_1,
        basic("rmjones:pw"),
        {
            "method": "POST",
            "protocol_version": "14.0",
            "command": Command.Sync,
            "locale": 0x0409,
            "device_id": "V140DEVICE",
            "device_id_raw": "v140Device",
            "policy_key": None,
            "device_type": "SmartPhone",
            "user.key": "rmjones",
            "query_user": None,
            "params": {},
            "query_form": QueryForm.BASE64,
        },
        id="vector-1",
    ),
    pytest.param("POST", VECTOR_2, {}, V2_FIELDS, id="vector-2"),
    pytest.param("POST", VECTOR_2.rstrip("="), {}, V2_FIELDS, id="vector-2-unpadded"),
    pytest.param("POST", "?" + VECTOR_2, {}, V2_FIELDS, id="vector-2-leading-?"),
    pytest.param("POST", VECTOR_3, basic("u:p"), V3_FIELDS, id="vector-3"),
    pytest.param("POST", VECTOR_3.rstrip("="), basic("u:p"), V3_FIELDS, id="vector-3-unpadded"),
    pytest.param(
        "POST",
        VECTOR_3.replace("/", "%2F").replace("=", "%3D"),
        basic("u:p"),
        V3_FIELDS,
        id="vector-3-percent-encoded",
    ),
    pytest.param(
        "POST", VECTOR_3.replace("/", "_"), basic("u:p"), V3_FIELDS, id="vector-3-urlsafe"
    ),
    pytest.param(
        "POST",
        "Cmd=Sync&User=rmjones&DeviceId=v140Device&DeviceType=SmartPhone",
        {"MS-ASProtocolVersion": "14.0", "X-MS-PolicyKey": "0"},
        {
            "command": Command.Sync,
            "protocol_version": "14.0",
            "policy_key": 0,
            "device_id": "V140DEVICE",
            "device_id_raw": "v140Device",
            "device_type": "SmartPhone",
            "locale": None,
            "user.key": "rmjones",
            "user.source": "query",
            "query_form": QueryForm.PLAIN,
        },
        id="plain-vector-1",
    ),
    pytest.param(
        "post",
        "cmd=sendmail&user=jdoe&deviceid=x1&devicetype=SP&saveinsent=T&ItemId=5%3A1",
        {"ms-asprotocolversion": "12.1", "x-ms-policykey": "4294967295"},
        {
            "method": "POST",
            "command": Command.SendMail,
            "protocol_version": "12.1",
            "policy_key": 0xFFFFFFFF,
            "params": {"SaveInSent": "T", "ItemId": "5:1"},
        },
        id="plain-lowercase-names",
    ),
    pytest.param(
        "POST",
        "Cmd=Ping&User=j&DeviceId=android-1234_AB&DeviceType=Android",
        {},
        {"device_id": "ANDROID-1234_AB", "device_id_raw": "android-1234_AB"},
        id="plain-android-device-id",
    ),
    pytest.param(
        "POST",
        f"Cmd=Ping&User=j&DeviceId={'a' * 64}&DeviceType=Android",
        {},
        {"device_id": "A" * 64},
        id="plain-device-id-64",
    ),
    pytest.param(
        "POST",
        "Cmd=Provision&User=j&DeviceId=validate&DeviceType=Android",
        {},
        {"device_id": "VALIDATE", "is_throwaway_device": True},
        id="validate-device",
    ),
    pytest.param(
        "POST",
        "Cmd=Provision&User=j&DeviceId=WebService&DeviceType=x",
        {},
        {"is_throwaway_device": True},
        id="webservice-device",
    ),
    pytest.param(
        "POST",
        blob(device=b"validate"),
        {},
        {"device_id": "VALIDATE", "device_id_raw": "validate", "is_throwaway_device": True},
        id="base64-validate-device",
    ),
    pytest.param(
        "POST",
        blob(device=b"ab-12"),
        {},
        {"device_id": "61622D3132", "device_id_raw": "61622d3132"},
        id="base64-non-alnum-device-is-hex",
    ),
    pytest.param(
        "POST",
        blob(params=b"\x08\x01j\x07\x01\x02\x00\x05a.txt\x01\x02\x31\x30\x06\x01\x30"),
        {},
        {
            "params": {
                "AcceptMultiPart": "T",
                "AttachmentName": "a.txt",
                "CollectionId": "10",
                "Occurrence": "0",
            }
        },
        id="base64-params",
    ),
    pytest.param(
        "POST",
        blob(params=b"\x07\x01\x00"),
        basic("j:p"),
        {"params": {}, "query_user": None},
        id="base64-options-zero",
    ),
    pytest.param(
        "POST",
        PLAIN,
        {"User-Agent": "Apple-iPhone/1", "Content-Type": "application/vnd.ms-sync.wbxml"},
        {"user_agent": "Apple-iPhone/1", "content_type": "application/vnd.ms-sync.wbxml"},
        id="plain-headers-kept",
    ),
    pytest.param(
        "POST",
        PLAIN + "&Cmd2=x",
        {"MS-ASAcceptMultiPart": "T", "X-MS-PolicyKey": " "},
        {"params": {"Cmd2": "x", "AcceptMultiPart": "T"}, "policy_key": None},
        id="plain-multipart-header-blank-key",
    ),
    pytest.param(
        "OPTIONS",
        "",
        {},
        {"command": None, "user": None, "device_id": "", "query_form": QueryForm.NONE},
        id="options-empty",
    ),
    pytest.param(
        "options",
        "User=jdoe&DeviceType=iPhone",
        {},
        {"method": "OPTIONS", "command": None, "device_id": "", "user.key": "jdoe"},
        id="options-no-device-id",
    ),
    pytest.param(
        "OPTIONS",
        "Cmd=Nonsense&DeviceId=abc",
        {},
        {"command": None, "device_id": "ABC", "device_type": "", "user": None},
        id="options-ignores-cmd",
    ),
    pytest.param(
        "OPTIONS",
        blob(device=b"", device_type=b"", params=b""),
        {},
        {"command": None, "device_id": "", "protocol_version": "14.1"},
        id="options-base64-empty-device",
    ),
]


@pytest.mark.parametrize(("method", "query", "headers", "expected"), PARSED)
def test_parse(method: str, query: str, headers: dict[str, str], expected: dict[str, Any]) -> None:
    request = parse_request(method, query, headers)
    assert {path: field(request, path) for path in expected} == expected


ERRORS = [
    pytest.param("GET", PLAIN, {}, MethodError, "GET", id="method-get"),
    pytest.param("DELETE", PLAIN, {}, MethodError, "DELETE", id="method-delete"),
    pytest.param("POST", "", {}, QueryError, "empty", id="empty"),
    pytest.param("POST", "!!!", {}, QueryError, "neither plain", id="garbage"),
    pytest.param("POST", "%%%zz", {}, QueryError, "neither plain", id="garbage-percent"),
    pytest.param("POST", "abcde", {}, QueryError, "base64", id="base64-bad-length"),
    pytest.param("POST", "jA=A", {}, QueryError, "base64", id="base64-inner-padding"),
    pytest.param("POST", "DeviceId=a&DeviceType=b&User=c", {}, CommandError, "no Cmd", id="no-cmd"),
    pytest.param("POST", "Cmd=&DeviceId=a", {}, CommandError, "empty", id="empty-cmd"),
    pytest.param(
        "POST", "Cmd=Frobnicate&DeviceId=a", {}, CommandError, "Frobnicate", id="unknown-cmd"
    ),
    pytest.param("POST", "Cmd=Sync&User=j&DeviceType=x", {}, DeviceIdError, "", id="no-device-id"),
    pytest.param("POST", "Cmd=Sync&DeviceId=&DeviceType=x", {}, DeviceIdError, "", id="empty-dev"),
    pytest.param(
        "POST", "Cmd=Sync&DeviceId=a.b&DeviceType=x", {}, DeviceIdError, "a.b", id="bad-dev-char"
    ),
    pytest.param(
        "POST",
        f"Cmd=Sync&DeviceId={'a' * 65}&DeviceType=x",
        {},
        DeviceIdError,
        "1-64",
        id="device-id-65",
    ),
    pytest.param("POST", "Cmd=Sync&DeviceId=a&User=j", {}, DeviceTypeError, "", id="no-type"),
    pytest.param(
        "POST", f"Cmd=Sync&DeviceId=a&DeviceType={'t' * 65}", {}, DeviceTypeError, "65", id="long"
    ),
    pytest.param(
        "POST", "Cmd=Sync&DeviceId=a&DeviceType=a%01b", {}, DeviceTypeError, "printable", id="ctl"
    ),
    pytest.param("POST", PLAIN + "&Cmd=Ping", {}, QueryError, "Cmd", id="dup-cmd"),
    pytest.param("POST", PLAIN + "&deviceid=x", {}, QueryError, "DeviceId", id="dup-device"),
    pytest.param("POST", PLAIN + "&DeviceType=x", {}, QueryError, "DeviceType", id="dup-type"),
    pytest.param("POST", PLAIN + "&User=x", {}, QueryError, "User", id="dup-user"),
    pytest.param(
        "POST",
        "Cmd=Sync&DeviceId=a&DeviceType=b",
        {},
        UserError,
        "no user",
        id="no-user",
    ),
    pytest.param(
        "POST", PLAIN, {"MS-ASProtocolVersion": "15.0"}, VersionError, "15.0", id="bad-version"
    ),
    pytest.param("POST", PLAIN, {"MS-ASProtocolVersion": ""}, VersionError, "", id="empty-version"),
    pytest.param("POST", PLAIN, {"X-MS-PolicyKey": "abc"}, QueryError, "PolicyKey", id="key-abc"),
    pytest.param(
        "POST", PLAIN, {"X-MS-PolicyKey": "4294967296"}, QueryError, "PolicyKey", id="key-big"
    ),
    pytest.param("POST", PLAIN, {"X-MS-PolicyKey": "-1"}, QueryError, "PolicyKey", id="key-neg"),
    pytest.param("POST", blob(version=12), {}, VersionError, "12", id="version-byte-12"),
    pytest.param("POST", blob(version=25), {}, VersionError, "25", id="version-byte-25"),
    pytest.param("POST", blob(command=5), {}, CommandError, "5", id="command-code-5"),
    pytest.param("POST", blob(command=24), {}, CommandError, "24", id="command-code-24"),
    pytest.param("POST", blob(device=b""), {}, DeviceIdError, "0", id="device-length-0"),
    pytest.param("POST", blob(key=b"\x01\x02\x03"), {}, QueryError, "policy key", id="key-len-3"),
    pytest.param("POST", blob(device_type=b""), {}, DeviceTypeError, "", id="type-length-0"),
    pytest.param("POST", blob(device_type=b"i\xffx"), {}, DeviceTypeError, "ASCII", id="type-8bit"),
    pytest.param("POST", blob(params=b"\x09\x01x"), {}, QueryError, "tag 9", id="unknown-tag"),
    pytest.param(
        "POST", blob(params=b"\x08\x01a\x08\x01b"), {}, QueryError, "User", id="duplicate-tag"
    ),
    pytest.param("POST", blob(params=b"\x07\x02\x01\x01"), {}, QueryError, "Options", id="opt-2"),
    pytest.param("POST", blob(params=b"\x08\x05jdoe"), {}, QueryError, "claims 5", id="overrun"),
    pytest.param("POST", blob(params=b"\x08"), {}, QueryError, "User length", id="tag-no-len"),
    pytest.param("POST", blob(params=b"\x03\x01\xff"), {}, QueryError, "UTF-8", id="param-utf8"),
    pytest.param(
        "POST",
        base64.b64encode(b"\x8d\x12\x09\x04\x30ABC").decode(),
        {},
        QueryError,
        "DeviceId claims 48 bytes",
        id="device-overrun",
    ),
    pytest.param("OPTIONS", "!!!", {}, QueryError, "neither", id="options-garbage"),
    pytest.param("OPTIONS", "DeviceId=a.b", {}, DeviceIdError, "a.b", id="options-bad-device-id"),
]


@pytest.mark.parametrize(("method", "query", "headers", "error", "fragment"), ERRORS)
def test_errors(
    method: str, query: str, headers: dict[str, str], error: type[EasError], fragment: str
) -> None:
    with pytest.raises(error) as info:
        parse_request(method, query, headers)
    assert fragment in info.value.message
    assert type(info.value) is error


def test_error_wire_statuses() -> None:
    with pytest.raises(MethodError) as method:
        parse_request("GET", PLAIN, {})
    assert method.value.http_status == 405
    with pytest.raises(UserError) as user:
        parse_request("POST", "Cmd=Sync&DeviceId=a&DeviceType=b", {})
    assert user.value.http_status == 400
    assert user.value.eas_status is CommonStatus.UserCannotBeAnonymous


V2_BYTES = base64.b64decode(VECTOR_2)
# Prefix lengths of vector 2 that end exactly after a complete field.
V2_WHOLE = {23: UserError, 41: None}


@pytest.mark.parametrize("length", range(len(V2_BYTES)))
def test_every_truncation_of_vector_2(length: int) -> None:
    query = base64.b64encode(V2_BYTES[:length]).decode()
    expected = V2_WHOLE.get(length, QueryError)
    if expected is None:
        assert parse_request("POST", query, {}).device_id == "ABC123"
    else:
        with pytest.raises(expected):
            parse_request("POST", query, {})


def test_truncations_with_auth_raise_only_query_errors() -> None:
    for length in range(len(V2_BYTES)):
        query = base64.b64encode(V2_BYTES[:length]).decode().rstrip("=")
        try:
            parse_request("POST", query, basic("u:p"))
        except QueryError as exc:
            assert "base64" in exc.message or "empty" in exc.message
        else:
            assert length in V2_WHOLE


# --- Identity ---

CORP = Realms((Realm("corp.example", netbios=frozenset({"corp"})),), default="corp.example")
SAME_USER = [
    pytest.param({}, "CORP%5CJDoe", id="netbios-query"),
    pytest.param({}, "jdoe%40Corp.Example", id="upn-query"),
    pytest.param({}, "JDOE", id="plain-query"),
    pytest.param(basic("CORP\\JDoe:pw"), "x", id="netbios-basic"),
    pytest.param(basic("JDoe@corp.example:pw"), "x", id="upn-basic"),
    pytest.param(basic("jdoe:pw"), "x", id="plain-basic"),
]


@pytest.mark.parametrize(("headers", "user"), SAME_USER)
def test_user_forms_of_one_realm_share_one_key(headers: dict[str, str], user: str) -> None:
    query = f"Cmd=Sync&User={user}&DeviceId=a&DeviceType=b"
    request = parse_request("POST", query, headers, CORP)
    assert request.user is not None
    assert request.user.key == "jdoe@corp.example"
    assert request.user.domain == "corp.example"
    assert request.user.source == ("authorization" if headers else "query")


@pytest.mark.parametrize(
    ("user", "key", "domain"),
    [
        ("CORP%5CJDoe", "corp\\jdoe", "corp"),
        ("jdoe%40Corp.Example", "jdoe@corp.example", "corp.example"),
        ("JDOE", "jdoe", None),
        ("jdoe%40gmail.example", "jdoe@gmail.example", "gmail.example"),
    ],
)
def test_without_realms_every_domain_is_its_own_principal(
    user: str, key: str, domain: str | None
) -> None:
    request = parse_request("POST", f"Cmd=Sync&User={user}&DeviceId=a&DeviceType=b", {})
    assert request.user is not None
    assert (request.user.key, request.user.domain) == (key, domain)


def test_another_realm_is_another_principal() -> None:
    query = "Cmd=Sync&User=jdoe%40gmail.example&DeviceId=a&DeviceType=b"
    request = parse_request("POST", query, {}, CORP)
    assert request.user is not None and request.user.key == "jdoe@gmail.example"


@pytest.mark.parametrize(
    "name", ["A\\B\\JDoe", "CORP\\jdoe@gmail.example", "CORP\\", ":", "x\x00y"]
)
def test_a_basic_name_that_names_no_principal_gives_no_user(name: str) -> None:
    """Never the query User instead: the backend authenticates the Basic name
    (the identity step then refuses the request, ``sentry.proxy.authn``)."""
    request = parse_request("POST", PLAIN, basic(f"{name}:pw"), CORP)
    assert request.user is None


def test_basic_auth_wins_over_query_user() -> None:
    request = parse_request("POST", PLAIN.replace("jdoe", "bob"), basic("CORP\\alice:pw"))
    assert request.user is not None
    assert (request.user.key, request.user.raw, request.user.source) == (
        "corp\\alice",
        "CORP\\alice",
        "authorization",
    )
    assert request.query_user == "bob"


def test_base64_user_tag_and_basic_auth() -> None:
    request = parse_request("POST", VECTOR_2, basic("other@example.com:pw"))
    assert request.user is not None
    assert request.user.key == "other@example.com"
    assert request.query_user == "jdoe@example.com"


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer eyJhbGciOiJub25lIn0.e30.",
        "Basic !!!notbase64",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Digest username=x",
    ],
)
def test_unusable_authorization_falls_back_to_query_user(authorization: str) -> None:
    request = parse_request("POST", PLAIN, {"Authorization": authorization})
    assert request.user is not None
    assert (request.user.key, request.user.source) == ("jdoe", "query")


def test_basic_credentials_in_iso_8859_1() -> None:
    request = parse_request("POST", PLAIN, basic("J\xf6rg:p\xe4ss", "iso-8859-1"))
    assert request.user is not None
    assert request.user.key == "j\xf6rg"


def test_basic_credentials_in_utf_8() -> None:
    request = parse_request("POST", PLAIN, basic("Stra\xdfe@x.de:p"))
    assert request.user is not None
    assert request.user.key == "strasse@x.de"  # casefold


def test_password_never_in_request() -> None:
    password = "s3cr3t-Pa55"
    request = parse_request("POST", PLAIN, basic(f"CORP\\jdoe:{password}"))
    assert password not in repr(request)
    assert password not in str(request)


# --- Headers, properties, values ---


def test_headers_any_mapping_case_insensitive() -> None:
    headers = MappingProxyType({"MS-ASPROTOCOLVERSION": "16.1", "x-ms-PolicyKey": "7"})
    request = parse_request("POST", PLAIN, headers)
    assert (request.protocol_version, request.policy_key) == ("16.1", 7)


def test_base64_version_wins_over_header() -> None:
    headers = {"MS-ASProtocolVersion": "nonsense", "X-MS-PolicyKey": "99"}
    request = parse_request("POST", VECTOR_2, headers)
    assert (request.protocol_version, request.policy_key) == ("14.1", 1234567890)


def test_base64_without_key_uses_header_key() -> None:
    request = parse_request("POST", VECTOR_3, {**basic("u:p"), "X-MS-PolicyKey": "5"})
    assert request.policy_key == 5


@pytest.mark.parametrize(
    ("version", "expected", "at_14", "at_16_1"),
    [
        ("2.5", (2, 5), False, False),
        ("12.1", (12, 1), False, False),
        ("14.0", (14, 0), True, False),
        ("16.1", (16, 1), True, True),
        (None, None, False, False),
    ],
)
def test_version_tuple_and_at_least(
    version: str | None, expected: tuple[int, int] | None, at_14: bool, at_16_1: bool
) -> None:
    headers = {} if version is None else {"MS-ASProtocolVersion": version}
    request = parse_request("POST", PLAIN, headers)
    assert request.version_tuple == expected
    assert request.at_least(14, 0) is at_14
    assert request.at_least(16, 1) is at_16_1
    assert request.at_least(2, 5) is (version is not None)


def test_params_are_read_only() -> None:
    request = parse_request("POST", PLAIN + "&ItemId=1", {})
    with pytest.raises(TypeError):
        request.params["ItemId"] = "2"  # type: ignore[index]


def test_command_codes() -> None:
    assert Command.Sync.code == 0
    assert Command.Find.code == 23
    assert Command.GetHierarchy.code is None
    assert sum(c.code is not None for c in Command) == 20


# --- Hypothesis: nothing but EasError escapes ---

HEADER_NAMES = st.sampled_from(
    ["Authorization", "MS-ASProtocolVersion", "X-MS-PolicyKey", "MS-ASAcceptMultiPart", "X-Other"]
)
HEADERS = st.dictionaries(HEADER_NAMES, st.text(max_size=30), max_size=4)


def parse_or_eas_error(method: str, query: str, headers: dict[str, str]) -> None:
    try:
        request = parse_request(method, query, headers)
    except RequestError:
        return
    assert isinstance(request, EasRequest)


@given(st.text(max_size=200), HEADERS, st.sampled_from(["POST", "OPTIONS"]))
def test_random_query_strings(query: str, headers: dict[str, str], method: str) -> None:
    parse_or_eas_error(method, query, headers)


@given(
    st.text(alphabet="&=%CmdDeviceIdTypeUser0123456789abcdef+/ \\@", max_size=120),
    HEADERS,
)
def test_random_plain_like_queries(query: str, headers: dict[str, str]) -> None:
    parse_or_eas_error("POST", query, headers)


@given(st.binary(max_size=300), st.booleans(), st.booleans(), HEADERS)
def test_random_base64_blobs(
    data: bytes, urlsafe: bool, padded: bool, headers: dict[str, str]
) -> None:
    text = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(data).decode()
    parse_or_eas_error("POST", text if padded else text.rstrip("="), headers)


@given(st.binary(max_size=120))
def test_random_tails_after_a_valid_head(tail: bytes) -> None:
    head = bytes([141, 18, 0x09, 0x04])
    parse_or_eas_error("POST", base64.b64encode(head + tail).decode(), {})
    parse_or_eas_error("OPTIONS", base64.b64encode(head + tail).decode(), {})


@given(st.binary(max_size=80))
def test_random_params_after_a_valid_prefix(params: bytes) -> None:
    parse_or_eas_error("POST", blob(params=params), basic("u:p"))


@given(st.binary(max_size=60))
def test_random_basic_credentials(credentials: bytes) -> None:
    header = {"Authorization": "Basic " + base64.b64encode(credentials).decode()}
    parse_or_eas_error("POST", PLAIN, header)


def test_undecodable_header_bytes_become_replacement_characters() -> None:
    # aiohttp passes non-UTF-8 header bytes on as lone surrogates (surrogateescape);
    # such text could not be stored, so a device could make its own row's write fail.
    raw = b"Apple\xff\xfe/1".decode("utf-8", "surrogateescape")
    headers = {
        "Authorization": "Basic " + base64.b64encode(b"alice:pw").decode(),
        "MS-ASProtocolVersion": "14.1",
        "User-Agent": raw,
        "Content-Type": raw,
    }
    request = parse_request("POST", "Cmd=Sync&DeviceId=D1&DeviceType=iPhone", headers)
    assert request.user_agent == request.content_type == "Apple\ufffd\ufffd/1"
    request.user_agent.encode("utf-8")  # storable
    plain = parse_request(
        "POST",
        "Cmd=Sync&DeviceId=D1&DeviceType=iPhone",
        {**headers, "User-Agent": "Outlook-iOS/2.0 é"},
    )
    assert plain.user_agent == "Outlook-iOS/2.0 é"  # valid text is kept as sent


@pytest.mark.parametrize(
    "name", ["MS-ASProtocolVersion", "X-MS-PolicyKey", "User-Agent", "MS-ASAcceptMultiPart"]
)
def test_a_header_the_decision_reads_may_not_repeat(name: str) -> None:
    """Sent twice (in any case), the decision would use one copy and the backend
    might act on the other: a 400 before anything is decided."""
    value = {"MS-ASProtocolVersion": "14.1", "X-MS-PolicyKey": "1"}.get(name, "T")
    headers = CIMultiDict([*basic("alice:pw").items(), (name, value), (name.lower(), value)])
    query = "Cmd=Sync&User=alice&DeviceId=DEV1&DeviceType=iPhone"
    with pytest.raises(QueryError, match="appears more than once"):
        parse_request("POST", query, headers)
    once = CIMultiDict([*basic("alice:pw").items(), (name, value)])
    assert parse_request("POST", query, once).device_id == "DEV1"


@given(st.text(st.sampled_from("aZ09=&;%+ .-_\\@#?/") | st.characters(), max_size=60))
def test_query_pairs_are_parse_qsl_s(query: str) -> None:
    """The plain query's fast split gives what ``parse_qsl`` gives."""
    from urllib.parse import parse_qsl

    from sentry.eas import request

    assert request._pairs(query) == parse_qsl(query, keep_blank_values=True)


@pytest.mark.parametrize("name", ["%55ser", "%75ser", "Us%65r", "DeviceI%64", "%43md"])
def test_an_escaped_parameter_name_is_the_same_parameter(name: str) -> None:
    """A repeat spelled with an escape (``%55ser`` is ``User``) takes the
    escaped path and is still the repeat it is: 400, never a second value."""
    with pytest.raises(QueryError, match="appears more than once"):
        parse_request("POST", PLAIN + f"&{name}=mallory", basic("jdoe:pw"))
