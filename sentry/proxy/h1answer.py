"""A sans-I/O parser of one HTTP/1.1 answer, for the lean upstream client.

Approach. ``AnswerParser`` is fed the bytes a backend sends and keeps what
they mean: the head (status, reason, headers, how the body is framed,
whether the connection can carry another request) and the body bytes
decoded from their framing. It does no I/O and never blocks, so the client
(``leanclient.py``) and the fuzz tests drive it the same way. Everything a
backend can get wrong is a ``BadAnswer`` with a short reason: a status line
that is not ``HTTP/1.x NNN``, a head over ``HEAD_LIMIT`` bytes or
``FIELD_LIMIT`` fields, a field without a colon, folded onto the next line
or with a bare CR, LF or NUL, Content-Length values that are not digits or
disagree, a chunk size that is not hex, more than ``INTERIM_LIMIT`` interim
1xx answers (which are otherwise skipped), a 101 (an upgrade). Header
values that are not UTF-8 keep U+FFFD in place of their bad bytes (the
device side's writer would silently drop them otherwise). The body is
framed by Transfer-Encoding ``chunked`` (chunk extensions and trailers read
and dropped), by Content-Length, or by the connection's end; the answer to
a HEAD and 204/304 answers have none (RFC 9112 §6.3). Bytes after a framed
answer are dropped, never relayed: the connection is then not reused, nor
is one after an HTTP/1.0 answer or ``Connection: close``. A head that
arrives a byte at a time is searched from where the last search stopped.
"""

from __future__ import annotations

import enum

from multidict import CIMultiDict, CIMultiDictProxy

__all__ = ["FIELD_LIMIT", "HEAD_LIMIT", "INTERIM_LIMIT", "AnswerParser", "BadAnswer", "Head"]

HEAD_LIMIT = 64 * 1024  # status line and fields, as aiohttp's client allows
FIELD_LIMIT = 256
INTERIM_LIMIT = 8  # 1xx answers before the final one (a real server sends one or two)
_LINE_LIMIT = 4096  # a chunk-size line or a trailer field
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_HEX = frozenset(b"0123456789abcdefABCDEF")


class BadAnswer(ValueError):
    """The backend's bytes are not an HTTP/1.1 answer we can relay."""


class _State(enum.Enum):
    HEAD = "head"
    LENGTH = "length"
    CHUNK_SIZE = "chunk size"
    CHUNK_DATA = "chunk data"
    CHUNK_END = "chunk end"
    TRAILERS = "trailers"
    UNTIL_CLOSE = "until close"
    DONE = "done"


class Head:
    """The head of an answer, as relayed."""

    __slots__ = ("content_length", "headers", "keep_alive", "reason", "status")

    def __init__(
        self,
        status: int,
        reason: str,
        headers: CIMultiDictProxy[str],
        content_length: int | None,
        keep_alive: bool,
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.content_length = content_length
        self.keep_alive = keep_alive


class AnswerParser:
    """Bytes in (``feed``, ``feed_eof``); ``head``, ``body`` and ``done`` out."""

    __slots__ = (
        "_buf", "_interim", "_left", "_no_body", "_scan", "_state", "body", "head", "reusable",
    )  # fmt: skip

    def __init__(self, *, no_body: bool = False) -> None:
        self._no_body = no_body  # the answer to a HEAD request
        self._buf = bytearray()
        self._state = _State.HEAD
        self._left = 0  # bytes left in the body (LENGTH) or the chunk (CHUNK_DATA)
        self._interim = 0
        self._scan = 0  # where the search for the head's end resumes (a head dripped in)
        self.head: Head | None = None
        self.body = bytearray()  # decoded body bytes not yet taken by the reader
        self.reusable = False

    @property
    def done(self) -> bool:
        return self._state is _State.DONE

    def feed(self, data: bytes) -> None:
        """Take bytes from the connection; ``BadAnswer`` when they cannot be one."""
        if self._state is _State.DONE:
            if data:  # a framed answer has ended: anything more is not ours
                self.reusable = False
            return
        if self._state is _State.UNTIL_CLOSE:
            self.body += data
            return
        if self._state is _State.LENGTH and not self._buf:
            self._take_length(data)
            return
        self._buf += data
        self._run()

    def feed_eof(self) -> None:
        """The backend closed the connection: the end of a body read to the
        close, or an answer cut short (``BadAnswer``)."""
        if self._state is _State.UNTIL_CLOSE:
            self._state = _State.DONE
            return
        if self._state is not _State.DONE:
            raise BadAnswer(f"connection closed in the {self._state.value}")

    def _take_length(self, data: bytes) -> None:
        n = self._left
        self.body += data[:n]
        self._left = max(0, n - len(data))
        if self._left == 0:
            self._finish(extra=len(data) > n)

    def _run(self) -> None:
        while self._state is not _State.DONE:
            before = self._state, len(self._buf)
            if self._state is _State.HEAD:
                self._parse_head()
            elif self._state is _State.LENGTH:
                data = bytes(self._buf)
                self._buf.clear()
                self._take_length(data)
            elif self._state is _State.CHUNK_SIZE:
                self._chunk_size()
            elif self._state is _State.CHUNK_DATA:
                self._chunk_data()
            elif self._state is _State.CHUNK_END:
                self._chunk_end()
            elif self._state is _State.TRAILERS:
                self._trailers()
            else:  # UNTIL_CLOSE
                self.body += self._buf
                self._buf.clear()
            if (self._state, len(self._buf)) == before:
                return  # needs more bytes
        if self._buf:
            self.reusable = False  # bytes after the framed end

    def _parse_head(self) -> None:
        end = self._buf.find(b"\r\n\r\n", self._scan)
        if end < 0:
            if len(self._buf) > HEAD_LIMIT:
                raise BadAnswer(f"answer head over {HEAD_LIMIT} bytes")
            self._scan = max(0, len(self._buf) - 3)  # not from the start again
            return
        self._scan = 0
        if end > HEAD_LIMIT:
            raise BadAnswer(f"answer head over {HEAD_LIMIT} bytes")
        raw = bytes(self._buf[:end])
        del self._buf[: end + 4]
        lines = raw.split(b"\r\n")
        status, reason, version = _status_line(lines[0])
        if 100 <= status < 200:
            if status == 101:
                raise BadAnswer("the backend switched protocols (101)")
            self._interim += 1
            if self._interim > INTERIM_LIMIT:
                raise BadAnswer(f"more than {INTERIM_LIMIT} interim answers")
            return  # an interim answer: the real one follows
        headers = _fields(lines[1:])
        self._frame(status, reason, version, headers)

    def _frame(self, status: int, reason: str, version: bytes, headers: CIMultiDict[str]) -> None:
        tokens = {t.strip().lower() for v in headers.getall("Connection", ()) for t in v.split(",")}
        keep_alive = version == b"1.1" and "close" not in tokens
        length: int | None = None
        codings = [
            t.strip().lower()
            for v in headers.getall("Transfer-Encoding", ())
            for t in v.split(",")
            if t.strip()
        ]
        if self._no_body or status in (204, 304):
            self._state = _State.DONE
            length = _content_length(headers) if not codings else None
        elif codings:
            if codings[-1] == "chunked":
                self._state = _State.CHUNK_SIZE
            else:  # RFC 9112 §6.3: a body read to the close
                self._state, keep_alive = _State.UNTIL_CLOSE, False
            if "content-length" in headers:
                keep_alive = False  # framed by both: relay it, never reuse the connection
        else:
            length = _content_length(headers)
            if length is None:
                self._state, keep_alive = _State.UNTIL_CLOSE, False
            elif length == 0:
                self._state = _State.DONE
            else:
                self._state, self._left = _State.LENGTH, length
        self.head = Head(status, reason, CIMultiDictProxy(headers), length, keep_alive)
        self.reusable = keep_alive
        if self._state is _State.DONE and self._buf:
            self.reusable = False

    def _chunk_size(self) -> None:
        end = self._buf.find(b"\r\n")
        if end < 0:
            if len(self._buf) > _LINE_LIMIT:
                raise BadAnswer("chunk-size line too long")
            return
        line = bytes(self._buf[:end]).split(b";", 1)[0].strip(b" \t")
        del self._buf[: end + 2]
        if not line or len(line) > 16 or not _HEX.issuperset(line):
            raise BadAnswer("chunk size is not hexadecimal")
        size = int(line, 16)
        if size == 0:
            self._state = _State.TRAILERS
        else:
            self._state, self._left = _State.CHUNK_DATA, size

    def _chunk_data(self) -> None:
        n = min(self._left, len(self._buf))
        if n:
            self.body += self._buf[:n]
            del self._buf[:n]
            self._left -= n
        if self._left == 0:
            self._state = _State.CHUNK_END

    def _chunk_end(self) -> None:
        if len(self._buf) < 2:
            return
        if self._buf[:2] != b"\r\n":
            raise BadAnswer("chunk data not followed by CRLF")
        del self._buf[:2]
        self._state = _State.CHUNK_SIZE

    def _trailers(self) -> None:
        end = self._buf.find(b"\r\n")
        if end < 0:
            if len(self._buf) > _LINE_LIMIT:
                raise BadAnswer("trailer field too long")
            return
        del self._buf[: end + 2]
        if end == 0:
            self._finish(extra=bool(self._buf))

    def _finish(self, *, extra: bool) -> None:
        self._state = _State.DONE
        if extra:
            self.reusable = False


def _status_line(line: bytes) -> tuple[int, str, bytes]:
    parts = line.split(b" ", 2)
    if len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise BadAnswer("not an HTTP/1.x status line")
    code = parts[1]
    if len(code) != 3 or not code.isdigit() or code[0:1] == b"0":
        raise BadAnswer("status code is not three digits")
    reason = parts[2].decode("latin-1") if len(parts) == 3 else ""
    if any(c in reason for c in "\r\n\0"):
        raise BadAnswer("control character in the reason phrase")
    return int(code), reason, parts[0][5:]


def _fields(lines: list[bytes]) -> CIMultiDict[str]:
    if len(lines) > FIELD_LIMIT:
        raise BadAnswer(f"more than {FIELD_LIMIT} header fields")
    pairs: list[tuple[str, str]] = []
    for line in lines:
        name, sep, value = line.partition(b":")
        if not sep or not name or not _TOKEN.issuperset(name):
            raise BadAnswer("malformed header field")  # also an obs-fold continuation
        # not UTF-8: U+FFFD, visibly (the device side's writer would drop a lone surrogate)
        pairs.append((name.decode("ascii"), value.strip(b" \t").decode("utf-8", "replace")))
    joined = b"".join(lines)  # the head was split on CRLF: a CR or LF left is a bare one
    if b"\r" in joined or b"\n" in joined or b"\0" in joined:
        raise BadAnswer("control character in a header field")
    return CIMultiDict(pairs)


def _content_length(headers: CIMultiDict[str]) -> int | None:
    values = {t.strip() for v in headers.getall("Content-Length", ()) for t in v.split(",")}
    if not values:
        return None
    if len(values) > 1:
        raise BadAnswer("Content-Length values disagree")
    (value,) = values
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        raise BadAnswer("Content-Length is not a number")
    return int(value)
