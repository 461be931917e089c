"""Tests for the MS-ASWBXML code page tables in sentry.eas.codepages."""

from __future__ import annotations

import pytest

from sentry.eas.codepages import PAGE_BY_NAMESPACE, PAGES, CodePage, Token, lookup

NAMESPACES = (
    "AirSync",
    "Contacts",
    "Email",
    "AirNotify",
    "Calendar",
    "Move",
    "GetItemEstimate",
    "FolderHierarchy",
    "MeetingResponse",
    "Tasks",
    "ResolveRecipients",
    "ValidateCert",
    "Contacts2",
    "Ping",
    "Provision",
    "Search",
    "GAL",
    "AirSyncBase",
    "Settings",
    "DocumentLibrary",
    "ItemOperations",
    "ComposeMail",
    "Email2",
    "Notes",
    "RightsManagement",
    "Find",
)

VERSIONS = {"2.5", "12.0", "12.1", "14.0", "14.1", "16.0", "16.1"}

PAGE_SINCE = {
    **{n: "2.5" for n in range(17)},
    17: "12.0",
    18: "12.0",
    19: "12.0",
    20: "12.0",
    21: "14.0",
    22: "14.0",
    23: "14.0",
    24: "14.1",
    25: "16.1",
}

# (namespace, name, value): command roots, Status tokens and other tokens a gateway relies on.
KEY_TOKENS = [
    ("AirSync", "Sync", 0x05),
    ("AirSync", "Status", 0x0E),
    ("AirSync", "Collection", 0x0F),
    ("AirSync", "Class", 0x10),
    ("AirSync", "CollectionId", 0x12),
    ("AirSync", "Wait", 0x24),
    ("AirSync", "Limit", 0x25),
    ("AirSync", "HeartbeatInterval", 0x29),
    ("Move", "MoveItems", 0x05),
    ("Move", "Status", 0x0B),
    ("GetItemEstimate", "GetItemEstimate", 0x05),
    ("GetItemEstimate", "Status", 0x0E),
    ("FolderHierarchy", "FolderCreate", 0x13),
    ("FolderHierarchy", "FolderDelete", 0x14),
    ("FolderHierarchy", "FolderUpdate", 0x15),
    ("FolderHierarchy", "FolderSync", 0x16),
    ("FolderHierarchy", "Status", 0x0C),
    ("FolderHierarchy", "SyncKey", 0x12),
    ("MeetingResponse", "MeetingResponse", 0x07),
    ("MeetingResponse", "Result", 0x0A),
    ("MeetingResponse", "Status", 0x0B),
    ("ResolveRecipients", "ResolveRecipients", 0x05),
    ("ResolveRecipients", "Status", 0x07),
    ("ValidateCert", "ValidateCert", 0x05),
    ("ValidateCert", "Status", 0x0A),
    ("Ping", "Ping", 0x05),
    ("Ping", "Status", 0x07),
    ("Ping", "HeartbeatInterval", 0x08),
    ("Ping", "Folders", 0x09),
    ("Ping", "Folder", 0x0A),
    ("Ping", "Id", 0x0B),
    ("Ping", "Class", 0x0C),
    ("Ping", "MaxFolders", 0x0D),
    ("Provision", "Provision", 0x05),
    ("Provision", "Policies", 0x06),
    ("Provision", "Policy", 0x07),
    ("Provision", "PolicyType", 0x08),
    ("Provision", "PolicyKey", 0x09),
    ("Provision", "Data", 0x0A),
    ("Provision", "Status", 0x0B),
    ("Provision", "RemoteWipe", 0x0C),
    ("Provision", "EASProvisionDoc", 0x0D),
    ("Provision", "AccountOnlyRemoteWipe", 0x3B),
    ("Search", "Search", 0x05),
    ("Search", "Status", 0x0C),
    ("Settings", "Settings", 0x05),
    ("Settings", "Status", 0x06),
    ("Settings", "Set", 0x08),
    ("Settings", "DeviceInformation", 0x16),
    ("Settings", "Model", 0x17),
    ("Settings", "IMEI", 0x18),
    ("Settings", "FriendlyName", 0x19),
    ("Settings", "OS", 0x1A),
    ("Settings", "OSLanguage", 0x1B),
    ("Settings", "PhoneNumber", 0x1C),
    ("Settings", "UserAgent", 0x20),
    ("Settings", "EnableOutboundSMS", 0x21),
    ("Settings", "MobileOperator", 0x22),
    ("ItemOperations", "ItemOperations", 0x05),
    ("ItemOperations", "Status", 0x0D),
    ("ComposeMail", "SendMail", 0x05),
    ("ComposeMail", "SmartForward", 0x06),
    ("ComposeMail", "SmartReply", 0x07),
    ("ComposeMail", "Status", 0x12),
    ("Find", "Find", 0x05),
    ("Find", "Status", 0x0A),
]

LEGACY_TOKENS = [
    ("FolderHierarchy", 0x0B, "Response"),
    ("FolderHierarchy", 0x0D, "ContentClass"),
    ("FolderHierarchy", 0x18, "Version"),
    ("GetItemEstimate", 0x06, "Version"),
    ("GetItemEstimate", 0x0B, "DateTime"),
    ("Ping", 0x06, "AutdState"),
    ("MeetingResponse", 0x0D, "Version"),
    ("Provision", 0x12, "DocumentBrowseEnabled"),
    ("Calendar", 0x0B, "Body"),
    ("Calendar", 0x10, "Rtf"),
    ("Calendar", 0x32, "DisplayName"),
    ("Email", 0x05, "Attachment"),
    ("Email", 0x10, "DisplayName"),
    ("Email", 0x38, "MIMESize"),
    ("Contacts", 0x09, "Body"),
    ("Contacts", 0x3B, "Rtf"),
    ("Tasks", 0x07, "BodyTruncated"),
    ("Tasks", 0x21, "Rtf"),
]

# Every legacy (page, value) pair named in eas-protocol.md section 2.5.
LEGACY_VALUES = {
    "AirSync": {0x11, 0x19, 0x1A, 0x1F},
    "FolderHierarchy": {0x0B, 0x0D, 0x18},
    "GetItemEstimate": {0x06, 0x0B},
    "Ping": {0x06},
    "MeetingResponse": {0x0D},
    "Provision": {0x12},
    "Calendar": {0x0B, 0x0C, 0x10, *range(0x2B, 0x33)},
    "Email": {*range(0x05, 0x0F), 0x10, 0x36, 0x37, 0x38},
    "Contacts": {0x09, 0x0A, 0x0B, 0x3B},
    "Tasks": {0x05, 0x06, 0x07, 0x21},
}

SINCE_TOKENS = [
    ("AirSync", "Wait", "12.1"),
    ("AirSyncBase", "Add", "16.0"),
    ("AirSyncBase", "InstanceId", "16.0"),
    ("AirSyncBase", "Preview", "14.0"),
    ("Provision", "AccountOnlyRemoteWipe", "16.1"),
    ("Provision", "AllowCamera", "12.1"),
    ("Email2", "IsDraft", "16.0"),
    ("Email2", "Send", "16.0"),
    ("ComposeMail", "Forwardees", "16.0"),
    ("ComposeMail", "ForwardeeEmail", "16.0"),
    ("Calendar", "ClientUid", "16.0"),
    ("Settings", "UserAgent", "12.1"),
    ("Settings", "EnableOutboundSMS", "14.0"),
    ("MeetingResponse", "SendResponse", "16.0"),
]


def test_26_pages_in_order() -> None:
    assert len(PAGES) == 26
    assert tuple(p.namespace for p in PAGES) == NAMESPACES
    for n, page in enumerate(PAGES):
        assert isinstance(page, CodePage)
        assert page.number == n


def test_page_since() -> None:
    assert {p.number: p.since for p in PAGES} == PAGE_SINCE


def test_page_by_namespace() -> None:
    assert len(PAGE_BY_NAMESPACE) == 26
    for page in PAGES:
        assert PAGE_BY_NAMESPACE[page.namespace] is page


def test_airnotify_has_no_tokens() -> None:
    assert PAGE_BY_NAMESPACE["AirNotify"].tokens == ()


def test_every_other_page_has_tokens() -> None:
    for page in PAGES:
        if page.namespace != "AirNotify":
            assert page.tokens, page.namespace


def test_token_values_in_tag_range() -> None:
    for page in PAGES:
        for token in page.tokens:
            assert isinstance(token, Token)
            assert 0x05 <= token.value <= 0x3F, (page.namespace, token)


def test_values_unique_and_ascending_per_page() -> None:
    for page in PAGES:
        values = [t.value for t in page.tokens]
        assert len(values) == len(set(values)), page.namespace
        assert values == sorted(values), page.namespace
        assert len(page.by_value) == len(page.tokens)


def test_names_unique_per_page() -> None:
    for page in PAGES:
        names = [t.name for t in page.tokens]
        assert len(names) == len(set(names)), page.namespace
        assert len(page.by_name) == len(page.tokens)
        assert all(name and name.isidentifier() for name in names), page.namespace


def test_since_values_are_protocol_versions() -> None:
    for page in PAGES:
        assert page.since in VERSIONS
        for token in page.tokens:
            assert token.since is None or token.since in VERSIONS, (page.namespace, token)


def test_token_since_is_later_than_its_page() -> None:
    order = sorted(VERSIONS, key=lambda v: tuple(int(x) for x in v.split(".")))
    for page in PAGES:
        assert page.since is not None
        for token in page.tokens:
            if token.since is not None:
                assert order.index(token.since) > order.index(page.since), (page.namespace, token)


@pytest.mark.parametrize(("namespace", "name", "value"), KEY_TOKENS)
def test_key_tokens(namespace: str, name: str, value: int) -> None:
    found = lookup(namespace, name)
    assert found is not None
    page, token = found
    assert page.namespace == namespace
    assert token.value == value
    assert not token.legacy
    assert page.by_value[value] is token


def test_lookup_returns_page_and_token() -> None:
    found = lookup("Provision", "Policy")
    assert found is not None
    page, token = found
    assert page is PAGES[14]
    assert token == Token(0x07, "Policy")


@pytest.mark.parametrize(
    ("namespace", "name"),
    [
        ("NoSuchNamespace", "Sync"),
        ("AirSync", "NoSuchTag"),
        ("AirNotify", "Notify"),
        ("airsync", "Sync"),  # namespaces are case-sensitive
        ("Ping", "LifeTime"),  # Z-Push name, not the spec name
        ("", ""),
    ],
)
def test_lookup_unknown_returns_none(namespace: str, name: str) -> None:
    assert lookup(namespace, name) is None


@pytest.mark.parametrize(("namespace", "value", "name"), LEGACY_TOKENS)
def test_legacy_tokens(namespace: str, value: int, name: str) -> None:
    token = PAGE_BY_NAMESPACE[namespace].by_value[value]
    assert token.name == name
    assert token.legacy


def test_legacy_tokens_are_exactly_the_documented_set() -> None:
    actual = {
        p.namespace: {t.value for t in p.tokens if t.legacy}
        for p in PAGES
        if any(t.legacy for t in p.tokens)
    }
    assert actual == LEGACY_VALUES


@pytest.mark.parametrize(("namespace", "name", "since"), SINCE_TOKENS)
def test_token_since(namespace: str, name: str, since: str) -> None:
    found = lookup(namespace, name)
    assert found is not None
    assert found[1].since == since


def test_find_page_tokens_have_no_own_since() -> None:
    assert all(t.since is None for t in PAGE_BY_NAMESPACE["Find"].tokens)


def test_spec_names_preferred_over_zpush_names() -> None:
    assert PAGE_BY_NAMESPACE["Email"].by_value[0x3B].name == "Status"
    assert PAGE_BY_NAMESPACE["Email"].by_value[0x19].name == "ReplyTo"
    assert PAGE_BY_NAMESPACE["Provision"].by_value[0x10].name == "RequireStorageCardEncryption"
    assert PAGE_BY_NAMESPACE["FolderHierarchy"].by_value[0x08].name == "ServerId"
    assert PAGE_BY_NAMESPACE["ComposeMail"].by_value[0x17].name == "ForwardeeName"
