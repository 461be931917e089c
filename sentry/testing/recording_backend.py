"""A strict HTTP/1.1 backend that records every byte the gateway sends it.

Approach. Proving that no request is smuggled past the gateway needs a backend
that is *stricter* than any real one and forgets nothing. Each connection is a
raw ``asyncio.Protocol`` (no aiohttp: its lenient parser is part of what is
under test) that appends every received chunk to the connection's ``raw``
bytes and feeds a small sans-IO parser, ``StrictParser``, which cuts the
stream into requests by the announced length only:

* the head ends at the first CRLF CRLF; every line ends in CRLF (a bare LF,
  a bare CR or a NUL is a violation), no obs-fold, header names are tokens;
* the body is exactly ``Content-Length`` bytes (one header, decimal digits)
  or a ``chunked`` body (the only transfer coding accepted); both at once,
  duplicates of a framing header and a Transfer-Encoding on HTTP/1.0 are
  violations; no framing header means no body.

A violation is recorded on the connection, answered with 400 and the
connection closed, so a test sees it. Each complete request becomes a frozen
``RecordedRequest`` (with the exact bytes it was cut from) and is answered by
the responder (default: 200 with an empty body, and the EAS OPTIONS headers
for OPTIONS). A method in ``early_answer`` is answered as soon as its head is
parsed, before its body is read, like servers that answer OPTIONS without
reading a body: the bytes that follow are then still consumed by the
announced length, which is how a desynchronised stream turns the next
forwarded request's bytes into a smuggled request. A test then compares
``requests`` with what the gateway decided to forward.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

__all__ = [
    "FramingViolation",
    "RecordedConnection",
    "RecordedRequest",
    "RecordingBackend",
    "RequestHead",
    "Responder",
    "StrictParser",
    "default_responder",
    "parse_head",
    "start_recording_backend",
]

_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_TARGET = re.compile(rb"[\x21-\x7e]+")
_VERSION = re.compile(rb"HTTP/1\.[01]")
_HEX = re.compile(rb"[0-9A-Fa-f]+")
_FRAMING = ("content-length", "transfer-encoding", "content-encoding", "host")
MAX_HEAD = 256 * 1024


class FramingViolation(Exception):
    """The byte stream broke HTTP/1.1 framing; the message says how."""


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the strict parser cut it from the stream."""

    connection: int
    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    raw: bytes

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (first one), case-insensitively."""
        lowered = name.lower()
        return next((v for k, v in self.headers if k.lower() == lowered), None)

    def header_count(self, name: str) -> int:
        lowered = name.lower()
        return sum(1 for k, _ in self.headers if k.lower() == lowered)


@dataclass(frozen=True)
class RequestHead:
    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]
    length: int | None  # None: chunked
    raw: bytes


class StrictParser:
    """Sans-IO: ``feed(bytes)`` returns the heads and requests completed so far.

    Heads are reported separately (``("head", RequestHead)``) so a server can answer
    before the body arrives; ``("request", RecordedRequest)`` follows once the
    body is complete. ``FramingViolation`` is raised on the first violation."""

    def __init__(self, connection: int = 0) -> None:
        self.connection = connection
        self._buf = bytearray()
        self._head: RequestHead | None = None

    def feed(self, data: bytes) -> list[tuple[str, object]]:
        self._buf += data
        events: list[tuple[str, object]] = []
        while True:
            if self._head is None:
                head = self._take_head()
                if head is None:
                    return events
                self._head = head
                events.append(("head", head))
            body = self._take_body(self._head)
            if body is None:
                return events
            events.append(("request", self._request(self._head, *body)))
            self._head = None

    def _request(self, head: RequestHead, body: bytes, raw_body: bytes) -> RecordedRequest:
        return RecordedRequest(
            self.connection,
            head.method,
            head.target,
            head.version,
            head.headers,
            body,
            head.raw + raw_body,
        )

    def _take_head(self) -> RequestHead | None:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > MAX_HEAD:
                raise FramingViolation("head larger than 256 KiB")
            _check_line_endings(bytes(self._buf), complete=False)
            return None
        raw = bytes(self._buf[: end + 4])
        del self._buf[: end + 4]
        return parse_head(raw)

    def _take_body(self, head: RequestHead) -> tuple[bytes, bytes] | None:
        if head.length is not None:
            if len(self._buf) < head.length:
                return None
            body = bytes(self._buf[: head.length])
            del self._buf[: head.length]
            return body, body
        return self._take_chunked()

    def _take_chunked(self) -> tuple[bytes, bytes] | None:
        pos, parts = 0, list[bytes]()
        while True:
            eol = self._buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            size_text = bytes(self._buf[pos:eol]).split(b";", 1)[0]
            if not _HEX.fullmatch(size_text):
                raise FramingViolation(f"bad chunk size line {bytes(self._buf[pos:eol])[:40]!r}")
            size = int(size_text, 16)
            start = eol + 2
            if size == 0:
                trailer_end = self._buf.find(b"\r\n", start)
                if trailer_end != start:  # trailers are not accepted
                    if trailer_end < 0:
                        return None
                    raise FramingViolation("chunked trailers")
                raw = bytes(self._buf[: start + 2])
                del self._buf[: start + 2]
                return b"".join(parts), raw
            if len(self._buf) < start + size + 2:
                return None
            if self._buf[start + size : start + size + 2] != b"\r\n":
                raise FramingViolation("chunk not followed by CRLF")
            parts.append(bytes(self._buf[start : start + size]))
            pos = start + size + 2


def _check_line_endings(data: bytes, *, complete: bool) -> None:
    if b"\x00" in data:
        raise FramingViolation("NUL in the head")
    stripped = data.replace(b"\r\n", b"")
    if not complete and stripped.endswith(b"\r"):
        stripped = stripped[:-1]  # a CR whose LF has not arrived yet
    if b"\n" in stripped or b"\r" in stripped:
        raise FramingViolation("bare LF or CR in the head")


def parse_head(raw: bytes) -> RequestHead:
    """Parse a complete head (ending in CRLF CRLF) strictly."""
    _check_line_endings(raw, complete=True)
    lines = raw[:-4].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not _TARGET.fullmatch(parts[1]):
        raise FramingViolation(f"bad request line {lines[0][:80]!r}")
    if not _VERSION.fullmatch(parts[2]):
        raise FramingViolation(f"bad version {parts[2][:20]!r}")
    headers = tuple(_header(line) for line in lines[1:])
    version = parts[2].decode()
    return RequestHead(
        parts[0].decode(), parts[1].decode(), version, headers, _length(headers, version), raw
    )


def _header(line: bytes) -> tuple[str, str]:
    if line[:1] in (b" ", b"\t"):
        raise FramingViolation("obs-fold (a header line starting with whitespace)")
    name, sep, value = line.partition(b":")
    if not sep or not _TOKEN.fullmatch(name):
        raise FramingViolation(f"bad header line {line[:60]!r}")
    return name.decode(), value.strip(b" \t").decode("latin-1")


def _length(headers: tuple[tuple[str, str], ...], version: str) -> int | None:
    seen: dict[str, list[str]] = {}
    for name, value in headers:
        if name.lower() in _FRAMING:
            seen.setdefault(name.lower(), []).append(value)
    for name, values in seen.items():
        if len(values) > 1:
            raise FramingViolation(f"duplicate {name}")
    te, cl = seen.get("transfer-encoding"), seen.get("content-length")
    if te and cl:
        raise FramingViolation("both Transfer-Encoding and Content-Length")
    if te:
        if version == "HTTP/1.0":
            raise FramingViolation("Transfer-Encoding on HTTP/1.0")
        if te[0].lower() != "chunked":
            raise FramingViolation(f"transfer coding {te[0]!r}")
        return None
    if cl:
        if not cl[0].isdigit() or not cl[0].isascii():
            raise FramingViolation(f"bad Content-Length {cl[0][:20]!r}")
        return int(cl[0])
    return 0


Responder = Callable[[RecordedRequest | RequestHead], bytes]

EAS_OPTIONS = (
    b"HTTP/1.1 200 OK\r\nMS-ASProtocolVersions: 12.1,14.0,14.1,16.0,16.1\r\n"
    b"MS-ASProtocolCommands: Sync,FolderSync,Provision,Ping,Settings\r\n"
    b"Content-Length: 0\r\n\r\n"
)
OK_EMPTY = b"HTTP/1.1 200 OK\r\nMS-Server-ActiveSync: 16.1\r\nContent-Length: 0\r\n\r\n"
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


def default_responder(request: RecordedRequest | RequestHead) -> bytes:
    """200 with no body; the EAS OPTIONS headers for OPTIONS."""
    return EAS_OPTIONS if request.method == "OPTIONS" else OK_EMPTY


@dataclass
class RecordedConnection:
    """Everything one connection carried, in order."""

    index: int
    raw: bytearray = field(default_factory=bytearray)
    requests: list[RecordedRequest] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    closed: bool = False


class _Connection(asyncio.Protocol):
    def __init__(self, backend: RecordingBackend, record: RecordedConnection) -> None:
        self.backend = backend
        self.record = record
        self.parser = StrictParser(record.index)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.record.raw += data
        try:
            events = self.parser.feed(data)
        except FramingViolation as exc:
            self.record.violations.append(str(exc))
            self._write(BAD_REQUEST)
            self._close()
            return
        for kind, value in events:
            self._event(kind, value)
        self.backend.changed()

    def _event(self, kind: str, value: object) -> None:
        if kind == "head":
            assert isinstance(value, RequestHead)
            if value.method in self.backend.early_answer:
                self._write(self.backend.responder(value))
            return
        assert isinstance(value, RecordedRequest)
        self.record.requests.append(value)
        if value.method not in self.backend.early_answer:
            self._write(self.backend.responder(value))
            if self.backend.close_after_answer and value.method != "OPTIONS":
                self._close()  # a server that crashed right after writing

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.record.closed = True
        self.backend.changed()


class RecordingBackend:
    """A running strict backend: its URL and every connection it saw."""

    def __init__(
        self,
        responder: Responder = default_responder,
        early_answer: Iterable[str] = ("OPTIONS",),
        *,
        close_after_answer: bool = False,
    ) -> None:
        self.responder = responder
        self.early_answer = frozenset(early_answer)
        self.close_after_answer = close_after_answer
        self.connections: list[RecordedConnection] = []
        self.url = ""
        self._server: asyncio.Server | None = None
        self._changed = asyncio.Event()

    def _protocol(self) -> _Connection:
        record = RecordedConnection(len(self.connections))
        self.connections.append(record)
        return _Connection(self, record)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> RecordingBackend:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, host, port)
        bound = self._server.sockets[0].getsockname()[1]
        self.url = f"http://{host}:{bound}"
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def changed(self) -> None:
        self._changed.set()

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every complete request, connection by connection."""
        return [r for c in self.connections for r in c.requests]

    @property
    def violations(self) -> list[str]:
        return [v for c in self.connections for v in c.violations]

    def eas_requests(self) -> list[RecordedRequest]:
        """Requests that are not the gateway's health probes (OPTIONS without a query)."""
        return [r for r in self.requests if not (r.method == "OPTIONS" and "?" not in r.target)]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` holds (re-checked on every received chunk)."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def __aenter__(self) -> RecordingBackend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def start_recording_backend(
    responder: Responder = default_responder,
    *,
    early_answer: Iterable[str] = ("OPTIONS",),
    host: str = "127.0.0.1",
    close_after_answer: bool = False,
) -> RecordingBackend:
    """Start a strict recording backend on a free port (``close_after_answer``:
    it closes the connection after answering each EAS request)."""
    backend = RecordingBackend(responder, early_answer, close_after_answer=close_after_answer)
    return await backend.start(host)
