"""The WBXML test vectors of eas-protocol.md §7 and the refusal bodies of §4.2.

Each vector is written out three ways: its bytes (hex, exactly as the document
gives them), the ``Element`` tree it decodes to, and, for the larger ones, its
XML form. All the vectors here are canonical (SWITCH_PAGE only when the page
changes, starting from page 0; every element with content closed by END;
one-byte ``mb_u_int32`` lengths), so each one re-encodes byte for byte.
"""

from __future__ import annotations

import pytest

from sentry.eas.errors import WbxmlError
from sentry.eas.wbxml import Element, decode, encode
from sentry.eas.xmlform import from_xml, to_xml


def hexbytes(text: str) -> bytes:
    return bytes.fromhex(text)


# Vector 4: FolderSync request, SyncKey 0 (13 bytes).
V4 = "03 01 6A 00 00 07 56 52 03 30 00 01 01"
T4 = Element(
    "FolderHierarchy",
    "FolderSync",
    (Element("FolderHierarchy", "SyncKey", ("0",)),),
)
X4 = """\
<FolderSync xmlns="FolderHierarchy">
  <SyncKey>0</SyncKey>
</FolderSync>"""

# Vector 5: FolderSync response, Status 142 (15 bytes).
V5 = "03 01 6A 00 00 07 56 4C 03 31 34 32 00 01 01"
T5 = Element(
    "FolderHierarchy",
    "FolderSync",
    (Element("FolderHierarchy", "Status", ("142",)),),
)
X5 = """\
<FolderSync xmlns="FolderHierarchy">
  <Status>142</Status>
</FolderSync>"""

# Vector 6: Sync response with one new contact (106 bytes, MS-ASWBXML section 3).
# No leading SWITCH_PAGE; the page goes 0 -> 17 -> 1 -> 17 inside ApplicationData,
# and the closing ENDs leave it on 17 (END does not restore the page).
V6 = (
    "03 01 6A 00 45 5C 4F 50 03 43 6F 6E 74 61 63 74 73 00 01 4B 03 32 00 01 52 03 32 00 01"
    " 4E 03 31 00 01 56 47 4D 03 32 3A 31 00 01 5D 00 11 4A 46 03 31 00 01 4C 03 30 00 01"
    " 4D 03 31 00 01 01 00 01 5E 03 46 75 6E 6B 2C 20 44 6F 6E 00 01 5F 03 44 6F 6E 00 01"
    " 69 03 46 75 6E 6B 00 01 00 11 56 03 31 00 01 01 01 01 01 01 01"
)
T6 = Element(
    "AirSync",
    "Sync",
    (
        Element(
            "AirSync",
            "Collections",
            (
                Element(
                    "AirSync",
                    "Collection",
                    (
                        Element("AirSync", "Class", ("Contacts",)),
                        Element("AirSync", "SyncKey", ("2",)),
                        Element("AirSync", "CollectionId", ("2",)),
                        Element("AirSync", "Status", ("1",)),
                        Element(
                            "AirSync",
                            "Commands",
                            (
                                Element(
                                    "AirSync",
                                    "Add",
                                    (
                                        Element("AirSync", "ServerId", ("2:1",)),
                                        Element(
                                            "AirSync",
                                            "ApplicationData",
                                            (
                                                Element(
                                                    "AirSyncBase",
                                                    "Body",
                                                    (
                                                        Element("AirSyncBase", "Type", ("1",)),
                                                        Element(
                                                            "AirSyncBase",
                                                            "EstimatedDataSize",
                                                            ("0",),
                                                        ),
                                                        Element("AirSyncBase", "Truncated", ("1",)),
                                                    ),
                                                ),
                                                Element("Contacts", "FileAs", ("Funk, Don",)),
                                                Element("Contacts", "FirstName", ("Don",)),
                                                Element("Contacts", "LastName", ("Funk",)),
                                                Element("AirSyncBase", "NativeBodyType", ("1",)),
                                            ),
                                        ),
                                    ),
                                ),
                            ),
                        ),
                    ),
                ),
            ),
        ),
    ),
)
X6 = """\
<Sync xmlns="AirSync">
  <Collections>
    <Collection>
      <Class>Contacts</Class>
      <SyncKey>2</SyncKey>
      <CollectionId>2</CollectionId>
      <Status>1</Status>
      <Commands>
        <Add>
          <ServerId>2:1</ServerId>
          <ApplicationData>
            <Body xmlns="AirSyncBase">
              <Type>1</Type>
              <EstimatedDataSize>0</EstimatedDataSize>
              <Truncated>1</Truncated>
            </Body>
            <FileAs xmlns="Contacts">Funk, Don</FileAs>
            <FirstName xmlns="Contacts">Don</FirstName>
            <LastName xmlns="Contacts">Funk</LastName>
            <NativeBodyType xmlns="AirSyncBase">1</NativeBodyType>
          </ApplicationData>
        </Add>
      </Commands>
    </Collection>
  </Collections>
</Sync>"""

# Vectors 7 and 8: Provision initial requests, EAS 2.5 (39 bytes) and 12.0-14.0 (41 bytes).
V7 = (
    "03 01 6A 00 00 0E 45 46 47 48 03 4D 53 2D 57 41 50 2D 50 72 6F 76 69 73 69 6F 6E 69 6E 67"
    " 2D 58 4D 4C 00 01 01 01 01"
)
T7 = Element(
    "Provision",
    "Provision",
    (
        Element(
            "Provision",
            "Policies",
            (
                Element(
                    "Provision",
                    "Policy",
                    (Element("Provision", "PolicyType", ("MS-WAP-Provisioning-XML",)),),
                ),
            ),
        ),
    ),
)
X7 = """\
<Provision xmlns="Provision">
  <Policies>
    <Policy>
      <PolicyType>MS-WAP-Provisioning-XML</PolicyType>
    </Policy>
  </Policies>
</Provision>"""
V8 = (
    "03 01 6A 00 00 0E 45 46 47 48 03 4D 53 2D 45 41 53 2D 50 72 6F 76 69 73 69 6F 6E 69 6E 67"
    " 2D 57 42 58 4D 4C 00 01 01 01 01"
)
T8 = Element(
    "Provision",
    "Provision",
    (
        Element(
            "Provision",
            "Policies",
            (
                Element(
                    "Provision",
                    "Policy",
                    (Element("Provision", "PolicyType", ("MS-EAS-Provisioning-WBXML",)),),
                ),
            ),
        ),
    ),
)
X8 = X7.replace("MS-WAP-Provisioning-XML", "MS-EAS-Provisioning-WBXML")

# Vector 9: pyactivesync's live-captured Search request (87 bytes): AirSync tokens
# inside a Search query, an empty Email:DateReceived, and the page going
# 15 -> 0 -> 15 -> 2 -> 15 after the initial switch to 15.
V9 = (
    "03 01 6A 00 00 0F 45 47 48 03 4D 61 69 6C 62 6F 78 00 01 49 53 00 00 50 03 45 6D 61 69 6C"
    " 00 01 52 03 39 00 01 00 0F 5B 00 02 0F 00 0F 52 03 32 30 32 30 2D 30 31 2D 30 31 54 30 30"
    " 3A 30 30 3A 30 30 2E 30 30 30 5A 00 01 01 01 01 4A 4B 03 30 2D 39 00 01 01 01 01"
)
T9 = Element(
    "Search",
    "Search",
    (
        Element(
            "Search",
            "Store",
            (
                Element("Search", "Name", ("Mailbox",)),
                Element(
                    "Search",
                    "Query",
                    (
                        Element(
                            "Search",
                            "And",
                            (
                                Element("AirSync", "Class", ("Email",)),
                                Element("AirSync", "CollectionId", ("9",)),
                                Element(
                                    "Search",
                                    "GreaterThan",
                                    (
                                        Element("Email", "DateReceived"),
                                        Element("Search", "Value", ("2020-01-01T00:00:00.000Z",)),
                                    ),
                                ),
                            ),
                        ),
                    ),
                ),
                Element("Search", "Options", (Element("Search", "Range", ("0-9",)),)),
            ),
        ),
    ),
)
X9 = """\
<Search xmlns="Search">
  <Store>
    <Name>Mailbox</Name>
    <Query>
      <And>
        <Class xmlns="AirSync">Email</Class>
        <CollectionId xmlns="AirSync">9</CollectionId>
        <GreaterThan>
          <DateReceived xmlns="Email"/>
          <Value>2020-01-01T00:00:00.000Z</Value>
        </GreaterThan>
      </And>
    </Query>
    <Options>
      <Range>0-9</Range>
    </Options>
  </Store>
</Search>"""

# Vector 11: OPAQUE inside Provision/Data (15 bytes).
V11 = "03 01 6A 00 00 0E 45 4A C3 03 41 42 43 01 01"
T11 = Element("Provision", "Provision", (Element("Provision", "Data", (b"ABC",)),))
X11 = """\
<Provision xmlns="Provision">
  <Data><wbxml:opaque xmlns:wbxml="urn:x-sentry:wbxml">QUJD</wbxml:opaque></Data>
</Provision>"""

# (hex, length the document gives, tree, XML form)
VECTORS = [
    pytest.param(V4, 13, T4, X4, id="4-foldersync-request"),
    pytest.param(V5, 15, T5, X5, id="5-foldersync-142"),
    pytest.param(V6, 106, T6, X6, id="6-sync-contact"),
    pytest.param(V7, 39, T7, X7, id="7-provision-2.5"),
    pytest.param(V8, 41, T8, X8, id="8-provision-12"),
    pytest.param(V9, 87, T9, X9, id="9-pyactivesync-search"),
    pytest.param(V11, 15, T11, X11, id="11-opaque"),
]


@pytest.mark.parametrize(("hex_", "length", "tree", "xml"), VECTORS)
def test_vector_decodes_to_its_tree(hex_, length, tree, xml):
    data = hexbytes(hex_)
    assert len(data) == length
    assert decode(data) == tree


@pytest.mark.parametrize(("hex_", "length", "tree", "xml"), VECTORS)
def test_vector_reencodes_byte_for_byte(hex_, length, tree, xml):
    assert encode(tree) == hexbytes(hex_)
    assert encode(decode(hexbytes(hex_))) == hexbytes(hex_)


@pytest.mark.parametrize(("hex_", "length", "tree", "xml"), VECTORS)
def test_vector_xml_form(hex_, length, tree, xml):
    assert to_xml(decode(hexbytes(hex_))) == xml
    assert from_xml(xml) == tree


def switch_targets(data: bytes) -> list[int]:
    """The SWITCH_PAGE targets of a body without OPAQUE, by a scan independent of decode."""
    targets, i = [], 4
    while i < len(data):
        if data[i] == 0x00:
            targets.append(data[i + 1])
            i += 2
        elif data[i] == 0x03:
            i = data.index(0, i + 1) + 1
        else:
            i += 1
    return targets


def test_vector_6_switches_page_mid_element():
    data = hexbytes(V6)
    assert data[4] == 0x45  # no leading SWITCH_PAGE: a page-0 document starts with its root
    assert switch_targets(data) == [17, 1, 17]
    # The last switch (to 17, for NativeBodyType) is never undone: 1 + 6 ENDs close the rest.
    assert data.endswith(b"\x00\x11\x56\x03\x31\x00" + b"\x01" * 7)


def test_vector_9_has_an_empty_element_and_switches_back_and_forth():
    data = hexbytes(V9)
    assert switch_targets(data) == [15, 0, 15, 2, 15]
    assert b"\x00\x02\x0f\x00" in data  # DateReceived without the content bit


def test_page_is_not_restored_by_end():
    # Sync { [page 17] Body { Type "1" } END  NativeBodyType "1" } : the 0x56 after
    # Body's END is AirSyncBase NativeBodyType, not AirSync Commands (also 0x16).
    data = hexbytes("03 01 6A 00 45 00 11 4A 46 03 31 00 01 01 56 03 31 00 01 01")
    assert decode(data) == Element(
        "AirSync",
        "Sync",
        (
            Element("AirSyncBase", "Body", (Element("AirSyncBase", "Type", ("1",)),)),
            Element("AirSyncBase", "NativeBodyType", ("1",)),
        ),
    )
    assert encode(decode(data)) == data


def test_leading_switch_to_page_0_is_accepted():
    # Some encoders write 00 00 before a page-0 root; it decodes the same, and
    # the canonical re-encoding drops it.
    data = hexbytes(V6)
    with_switch = data[:4] + b"\x00\x00" + data[4:]
    assert decode(with_switch) == T6
    assert encode(decode(with_switch)) == data


def test_redundant_switch_to_current_page_is_accepted():
    data = hexbytes("03 01 6A 00 00 07 56 00 07 52 03 30 00 01 01")
    assert decode(data) == T4
    assert encode(decode(data)) == hexbytes(V4)


@pytest.mark.parametrize(
    ("hex_", "message"),
    [
        pytest.param("03 01 6A 00 00 07 56", "body ends inside <FolderSync>", id="open-foldersync"),
        pytest.param("03 01 6A 00 00 07 56 4C", "body ends inside <Status>", id="open-status"),
        # The document says this OPAQUE "claims 200 bytes": C8 01 is 200 read as a
        # little-endian varint (0x48 + 1 * 128), but mb_u_int32 is big-endian base-128
        # (MS-ASWBXML / WBXML 1.3 5.1; eas-protocol.md 2.2: 128 -> 81 00), so it is
        # 0x48 * 128 + 1 = 9217. Either way the body is truncated.
        pytest.param(
            "03 01 6A 00 00 07 56 C3 C8 01 61 62",
            "opaque data claims 9217 bytes, 2 present",
            id="opaque-overrun",
        ),
    ],
)
def test_vector_12_malformed_inputs_raise(hex_, message):
    with pytest.raises(WbxmlError, match=message):
        decode(hexbytes(hex_))


# §4.2: the Status 129 body of every command with a WBXML answer:
# (root tag, namespace, hex).
REFUSALS = [
    ("Sync", "AirSync", "03 01 6A 00 45 4E 03 31 32 39 00 01 01"),
    ("FolderSync", "FolderHierarchy", "03 01 6A 00 00 07 56 4C 03 31 32 39 00 01 01"),
    ("FolderCreate", "FolderHierarchy", "03 01 6A 00 00 07 53 4C 03 31 32 39 00 01 01"),
    ("FolderUpdate", "FolderHierarchy", "03 01 6A 00 00 07 55 4C 03 31 32 39 00 01 01"),
    ("FolderDelete", "FolderHierarchy", "03 01 6A 00 00 07 54 4C 03 31 32 39 00 01 01"),
    ("GetItemEstimate", "GetItemEstimate", "03 01 6A 00 00 06 45 4E 03 31 32 39 00 01 01"),
    ("MoveItems", "Move", "03 01 6A 00 00 05 45 4B 03 31 32 39 00 01 01"),
    ("Ping", "Ping", "03 01 6A 00 00 0D 45 47 03 31 32 39 00 01 01"),
    ("Provision", "Provision", "03 01 6A 00 00 0E 45 4B 03 31 32 39 00 01 01"),
    ("Search", "Search", "03 01 6A 00 00 0F 45 4C 03 31 32 39 00 01 01"),
    ("Settings", "Settings", "03 01 6A 00 00 12 45 46 03 31 32 39 00 01 01"),
    ("ItemOperations", "ItemOperations", "03 01 6A 00 00 14 45 4D 03 31 32 39 00 01 01"),
    ("SendMail", "ComposeMail", "03 01 6A 00 00 15 45 52 03 31 32 39 00 01 01"),
    ("SmartForward", "ComposeMail", "03 01 6A 00 00 15 46 52 03 31 32 39 00 01 01"),
    ("SmartReply", "ComposeMail", "03 01 6A 00 00 15 47 52 03 31 32 39 00 01 01"),
    ("ResolveRecipients", "ResolveRecipients", "03 01 6A 00 00 0A 45 47 03 31 32 39 00 01 01"),
    ("ValidateCert", "ValidateCert", "03 01 6A 00 00 0B 45 4A 03 31 32 39 00 01 01"),
    ("Find", "Find", "03 01 6A 00 00 19 45 4A 03 31 32 39 00 01 01"),
]


@pytest.mark.parametrize(("root", "namespace", "hex_"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusal_body_decodes_to_status_129(root, namespace, hex_):
    tree = decode(hexbytes(hex_))
    assert tree == Element(namespace, root, (Element(namespace, "Status", ("129",)),))
    assert to_xml(tree) == f'<{root} xmlns="{namespace}">\n  <Status>129</Status>\n</{root}>'


def test_meeting_response_refusal_wraps_status_in_result():
    # MeetingResponse has no top-level Status; §4.2 puts it in Result.
    tree = decode(hexbytes("03 01 6A 00 00 08 47 4A 4B 03 31 32 39 00 01 01 01"))
    assert tree == Element(
        "MeetingResponse",
        "MeetingResponse",
        (
            Element(
                "MeetingResponse",
                "Result",
                (Element("MeetingResponse", "Status", ("129",)),),
            ),
        ),
    )
