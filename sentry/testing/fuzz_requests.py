"""Hypothesis strategies for raw HTTP bytes aimed at the gateway's request path.

Approach. Random bytes die in the first line of the parser and prove little;
the interesting inputs are *almost* right. ``raw_requests`` therefore builds
mostly-valid EAS requests from parts — method, plain or base64 query with a
user and DeviceId drawn from a small cast (one admin-allowed association,
one admin-blocked, unknown ones refused by auto-block), protocol version,
Authorization in its good and broken forms, a WBXML body of the command (or
a gzip of it, or junk) — and then mutates the *framing*: Content-Length
right, too short, too long, repeated or with a Transfer-Encoding; chunked;
obs-fold; bare LF; a NUL; Expect; OPTIONS with a body; a second request
pipelined behind the first; and finally, sometimes, one byte flipped,
inserted or removed anywhere. Hypothesis shrinks a failure to the smallest
such request. The cast is exported so the harness can seed the gateway.
"""

from __future__ import annotations

import base64
import gzip
from dataclasses import dataclass, replace

from hypothesis import strategies as st

from sentry.eas.request import Command
from sentry.eas.wbxml import encode
from sentry.eas.xmlform import from_xml

__all__ = [
    "ALLOWED",
    "BLOCKED",
    "EAS_PATH",
    "RequestSpec",
    "raw_requests",
    "request_specs",
    "serialise",
]

EAS_PATH = "/Microsoft-Server-ActiveSync"
ALLOWED = ("FUZZALLOW01", "alice")  # admin Allow: forwarded
BLOCKED = ("FUZZBLOCK01", "alice")  # admin Block: refused, never forwarded
_USERS = ("alice",) * 4 + ("bob", "ALICE", "alice@example.com", "EXAMPLE\\alice", "", "x" * 300)
_DEVICES = (ALLOWED[0],) * 4 + (BLOCKED[0],) * 2 + (
    "FUZZNEW01", "fuzzallow01", "", "bad id!", "V" * 65, "validate",
)  # fmt: skip
_XML = {
    Command.Ping: '<Ping xmlns="Ping"><HeartbeatInterval>60</HeartbeatInterval><Folders><Folder>'
    "<Id>1</Id><Class>Email</Class></Folder></Folders></Ping>",
    Command.Sync: '<Sync xmlns="AirSync"><Collections><Collection><SyncKey>0</SyncKey>'
    "<CollectionId>1</CollectionId></Collection></Collections></Sync>",
    Command.FolderSync: '<FolderSync xmlns="FolderHierarchy"><SyncKey>0</SyncKey></FolderSync>',
    Command.Provision: '<Provision xmlns="Provision"><Policies><Policy><PolicyType>'
    "MS-EAS-Provisioning-WBXML</PolicyType></Policy></Policies></Provision>",
    Command.Settings: '<Settings xmlns="Settings"><DeviceInformation><Set><Model>Fuzz</Model>'
    "</Set></DeviceInformation></Settings>",
}
_BODIES = {command: encode(from_xml(xml)) for command, xml in _XML.items()}
_COMMANDS = (*_BODIES, Command.SendMail, Command.ItemOperations, Command.GetItemEstimate)
_FRAMINGS = ("length",) * 12 + (
    "none", "short", "long", "double", "chunked", "te_and_cl",
    "te_gzip", "bad_length",
)  # fmt: skip
_HEADER_MUTATIONS = ("none",) * 12 + ("obs_fold", "nul", "bad_name", "expect", "huge", "dup_ce")


@dataclass(frozen=True)
class RequestSpec:
    """One request before serialisation: what it says and how it is framed."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    framing: str = "length"
    header_mutation: str = "none"
    version: str = "HTTP/1.1"
    eol: bytes = b"\r\n"


def _basic(user: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:Tr0ub4dor&3".encode()).decode()


def _base64_query(command: Command, device: str, user: str) -> str:
    dev, usr = device.encode()[:255], user.encode()[:255]
    raw = bytes([141, command.code or 0, 0x09, 0x04, len(dev)]) + dev + b"\x00\x06iPhone"
    raw += bytes([8, len(usr)]) + usr
    return base64.b64encode(raw).decode()


@st.composite
def request_specs(draw: st.DrawFn) -> RequestSpec:
    """A mostly-valid EAS request with one framing choice and maybe one header mutation."""
    options = draw(st.integers(0, 9)) == 0
    command = draw(st.sampled_from(_COMMANDS))
    user, device = draw(st.sampled_from(_USERS)), draw(st.sampled_from(_DEVICES))
    if options:
        method, query = "OPTIONS", f"User={user}"
    elif draw(st.booleans()) and command.code is not None:
        method, query = "POST", _base64_query(command, device, user)
    else:
        method = draw(st.sampled_from(("POST", "POST", "POST", "GET", "PUT", "HEAD")))
        query = f"Cmd={command.value}&User={user}&DeviceId={device}&DeviceType=iPhone"
    headers = [("MS-ASProtocolVersion", draw(st.sampled_from(("14.1", "16.1", "12.1", "99"))))]
    headers += draw(_authorization(user))
    headers.append(("Content-Type", "application/vnd.ms-sync.wbxml"))
    body, coding = draw(_body(command, options))
    if coding:
        headers.append(("Content-Encoding", coding))
    if draw(st.booleans()):
        headers.append(("Connection", "close"))
    return RequestSpec(
        method,
        f"{EAS_PATH}?{query}",
        tuple(headers),
        body,
        framing=draw(st.sampled_from(_FRAMINGS)),
        header_mutation=draw(st.sampled_from(_HEADER_MUTATIONS)),
        version=draw(st.sampled_from(("HTTP/1.1",) * 9 + ("HTTP/1.0",))),
        eol=draw(st.sampled_from((b"\r\n",) * 19 + (b"\n",))),
    )


def _authorization(user: str) -> st.SearchStrategy[list[tuple[str, str]]]:
    good = ("Authorization", _basic(user))
    return st.sampled_from(
        [
            *[[good]] * 6,
            [],
            [("Authorization", _basic(user) + "\x00")],
            [("Authorization", "Bearer " + "t" * 2000)],
            [good, ("Authorization", _basic("bob"))],
            [("Authorization", "Basic !!!notbase64")],
        ]
    )


def _body(command: Command, options: bool) -> st.SearchStrategy[tuple[bytes, str | None]]:
    if options:
        return st.sampled_from([(b"", None), (b"x" * 40, None)])
    wbxml = _BODIES.get(command, b"\x03\x01j\x00")
    return st.one_of(
        st.just((wbxml, None)),
        st.just((b"", None)),
        st.just((gzip.compress(wbxml), "gzip")),
        st.just((gzip.compress(wbxml) + b"tail", "gzip")),
        st.just((wbxml, "br")),
        st.binary(max_size=64).map(lambda junk: (junk, None)),
    )


def serialise(spec: RequestSpec) -> bytes:
    """The bytes of ``spec``, framed and mutated as it says."""
    lines = [f"{spec.method} {spec.target} {spec.version}", "Host: gateway.fuzz"]
    lines += [f"{k}: {v}" for k, v in spec.headers]
    lines += _header_mutation(spec.header_mutation)
    framing, body = _framing(spec.framing, spec.body)
    lines += framing
    head = spec.eol.join(line.encode("utf-8", "surrogateescape") for line in lines)
    return head + spec.eol + spec.eol + body


def _header_mutation(kind: str) -> list[str]:
    return {
        "obs_fold": ["X-Folded: one\r\n two"],
        "nul": ["X-Nul: a\x00b"],
        "bad_name": ["Bad Name: x"],
        "expect": ["Expect: 100-continue"],
        "huge": ["X-Huge: " + "h" * 20_000],
        "dup_ce": ["Content-Encoding: identity"],
    }.get(kind, [])


def _framing(kind: str, body: bytes) -> tuple[list[str], bytes]:
    n = len(body)
    chunked = (f"{n:x}\r\n".encode() + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
    return {
        "length": ([f"Content-Length: {n}"], body),
        "none": ([], body),
        "short": ([f"Content-Length: {max(0, n - 3)}"], body),
        "long": ([f"Content-Length: {n + 5}"], body),
        "double": ([f"Content-Length: {n}", f"Content-Length: {n}"], body),
        "chunked": (["Transfer-Encoding: chunked"], chunked),
        "te_and_cl": ([f"Content-Length: {n}", "Transfer-Encoding: chunked"], chunked),
        "te_gzip": (["Transfer-Encoding: gzip, chunked"], chunked),
        "bad_length": ([f"Content-Length: +{n}"], body),
    }[kind]


@st.composite
def raw_requests(draw: st.DrawFn) -> bytes:
    """One or two (pipelined) requests, then maybe one byte changed anywhere."""
    specs = [draw(request_specs())]
    if draw(st.integers(0, 3)) == 0:  # pipelined: only the last may ask to close
        first = replace(
            specs[0], headers=tuple(h for h in specs[0].headers if h[0] != "Connection")
        )
        specs = [first, draw(request_specs())]
        if draw(st.booleans()):  # the classic: an OPTIONS whose body is a request
            specs[0] = replace(first, method="OPTIONS", body=serialise(specs[1]), framing="length")
    data = b"".join(serialise(s) for s in specs)
    edit = draw(st.sampled_from(("none",) * 7 + ("flip", "insert", "delete")))
    if edit == "none" or not data:
        return data
    at = draw(st.integers(0, len(data) - 1))
    byte = bytes([draw(st.integers(0, 255))])
    if edit == "flip":
        return data[:at] + byte + data[at + 1 :]
    if edit == "insert":
        return data[:at] + byte + data[at:]
    return data[:at] + data[at + 1 :]
