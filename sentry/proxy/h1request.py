"""A sans-I/O parser of HTTP/1.1 requests, for the gateway's own device-side server.

Approach. ``parse_head`` is handed the server's read buffer and says whether
it holds a whole request head yet: ``None`` (read more), the ``RequestHead``
and the index where the body (or the next pipelined request) starts, or a
``BadRequest`` carrying the status to answer with (400, 414, 431, 501) and a
short ``kind`` for a metric label. It keeps no state between calls, so it is
strict about what is already buffered instead: every complete line is checked
each time, and the partial last line as far as it goes, so a request line
with no CRLF within ``Limits.request_line`` + 2 bytes is a 414 at once, a
field line already over ``Limits.field`` a 431 at once, and a caller that
calls again after each read never holds more than the limits allow. The
rules are RFC 9112's, read strictly (when in doubt, 400): CRLF only (a bare
CR or LF is refused), single spaces in the request line, ``HTTP/1.1`` or
``HTTP/1.0`` only, field names that are tokens right before the colon, no
obs-fold, no controls but HTAB in values, one Content-Length of digits, one
Transfer-Encoding that is exactly ``chunked`` (anything else a 501), never
both, and at most one Host. A well-formed head takes one search for its end, one split into
lines, one ``translate`` over the whole head for control characters, and a
few bytes methods per field (a table ``translate`` checks and lower-cases a
name at once); a head holding a control byte has each line checked on its
own instead. Either way the error raised is the first line's, as it would
be had the head arrived a byte at a time. ``ChunkedDecoder`` decodes a chunked body
from bytes fed in any pieces (one at a time if need be), hands data back as
it arrives, reads and drops chunk extensions and trailers, and stops
consuming at the end of the body. No error's reason quotes the device's
bytes: they may hold a password.
"""

from __future__ import annotations

__all__ = ["BadRequest", "ChunkedDecoder", "Limits", "RequestHead", "parse_head"]

_TCHAR = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_TARGET = bytes(range(0x21, 0x7F)) + bytes(range(0x80, 0x100))  # no controls, SP or DEL
_REQUEST_LINE = b" " + _TARGET  # every byte a request line may hold
_VALUE = b"\t" + b" " + _TARGET  # field values, chunk extensions: HTAB, SP, VCHAR, obs-text
_HEX = b"0123456789abcdefABCDEF"
# a field name lower-cased, with each byte that is not a token's as b":" (which partition
# has already ruled out of a name): one table lookup a byte, then one memchr
_NAME = bytes((b | 0x20 if 0x41 <= b <= 0x5A else b) if b in _TCHAR else 0x3A for b in range(256))
_DIGITS = b"0123456789"
_LEADING_CRLF = 4  # empty lines tolerated before a request line (RFC 9112 §2.2)
_OWS_LIMIT = 256  # whitespace around a field value, over and above Limits.field
_LINE_LIMIT = 4096  # a chunk-size line or a trailer field, without its CRLF
_TRAILER_LIMIT = 64  # trailer fields
_BOTH = "both Content-Length and Transfer-Encoding"
_HTTP_11 = (1, 1)
_HTTP_10 = (1, 0)
# the lengths of the names the head's framing looks at: others are compared to none
_SPECIAL_LENGTHS = frozenset(
    len(name)
    for name in (b"content-length", b"transfer-encoding", b"connection", b"expect", b"host")
)


class BadRequest(ValueError):
    """The device's bytes are not a request we can serve."""

    status: int
    kind: str
    reason: str

    def __init__(self, status: int, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.kind = kind  # a short class of the error, for a metric label
        self.reason = reason  # never quotes the device's bytes


class Limits:
    """How big a request head may be. ``field`` counts a field's name and its
    value with the whitespace around it trimmed; a field line may carry at
    most ``_OWS_LIMIT`` bytes of such whitespace more."""

    __slots__ = ("field", "fields", "request_line")

    def __init__(self, request_line: int = 8190, field: int = 8190, fields: int = 100) -> None:
        self.request_line = request_line  # without its CRLF; longer: 414
        self.field = field  # len(name) + len(trimmed value); longer: 431
        self.fields = fields  # header fields; more: 431


class RequestHead:
    """The head of a request, as parsed."""

    __slots__ = (
        "chunked", "content_length", "expect", "keep_alive", "method", "raw_headers", "target",
        "version",
    )  # fmt: skip

    def __init__(
        self,
        method: str,
        target: str,
        version: tuple[int, int],
        raw_headers: tuple[tuple[bytes, bytes], ...],
        content_length: int | None,
        chunked: bool,
        keep_alive: bool,
        expect: bool,
    ) -> None:
        self.method = method  # an ASCII token
        self.target = target  # UTF-8, bad bytes as lone surrogates (surrogateescape)
        self.version = version
        self.raw_headers = raw_headers  # (name as sent, value OWS-trimmed), in order
        self.content_length = content_length
        self.chunked = chunked
        self.keep_alive = keep_alive
        self.expect = expect


def parse_head(
    buf: bytes | bytearray, limits: Limits, start: int = 0
) -> tuple[RequestHead, int] | None:
    """Parse one request head from buf[start:]. Returns (head, end) where end is the
    index just after the blank line ending the head, or None when the head is not
    complete yet. Raises BadRequest as soon as what is buffered is already wrong or
    already over a limit (e.g. no CRLF within limits.request_line + 2 bytes -> 414
    at once; a field line already longer than allowed -> 431 at once; the whole
    buffered head longer than the most the limits allow -> 431), so a caller that
    keeps calling with a growing buffer never buffers more than the limits allow."""
    pos = start
    for _ in range(_LEADING_CRLF):
        if not buf.startswith(b"\r\n", pos):
            break
        pos += 2
    else:
        if buf.startswith(b"\r\n", pos):
            raise BadRequest(400, "bad_request_line", "too many empty lines before the request")
    line_max = limits.field + 1 + _OWS_LIMIT
    bound = limits.request_line + 4 + limits.fields * (line_max + 2)  # the longest head
    end = buf.find(b"\r\n\r\n", pos, pos + bound)
    if end >= 0:
        return _head(bytes(buf[pos:end]), limits, line_max), end + 4
    # not complete: check what is there, so that nothing wrong or too big is kept
    rl_window = pos + limits.request_line + 2
    if buf.find(b"\r\n", pos, rl_window) < 0:
        _partial_request_line(bytes(buf[pos:rl_window]), limits)
        return None
    last = buf.rfind(b"\r\n", pos, pos + bound)
    head = _head(bytes(buf[pos:last]), limits, line_max)  # the complete lines
    _partial_field_line(bytes(buf[last + 2 : pos + bound]), len(head.raw_headers), limits, line_max)
    if len(buf) - pos >= bound:  # cannot happen past the checks above; a backstop
        raise BadRequest(431, "header_too_large", "request head over the limits")
    return None


def _head(head: bytes, limits: Limits, line_max: int) -> RequestHead:
    lines = head.split(b"\r\n")
    n = len(lines) - 1
    # a control byte besides the CRLFs: every line is then checked on its own, in order
    careful = len(head.translate(None, _VALUE)) != 2 * n
    if careful and lines[0].translate(None, _REQUEST_LINE):
        raise BadRequest(400, "bad_request_line", "a control byte in the request line")
    method, target, version = _request_line(lines[0], limits)
    raw: list[tuple[bytes, bytes]] = []
    content_length: int | None = None
    chunked = False
    connection: list[bytes] = []
    expect = host = False
    field_max = limits.field
    # errors come in the order of the lines, as when the head arrives a line at a time
    for line in lines[1 : limits.fields + 1] if n > limits.fields else lines[1:]:
        name, sep, value = line.partition(b":")
        lname = name.translate(_NAME)  # lower-cased, a byte not in a token as ":"
        if careful or not sep or not name or 58 in lname:
            _field_line(line, trailer=False)  # raises, naming what is wrong
        value = value.strip(b" \t")
        if len(name) + len(value) > field_max or len(line) > line_max:
            raise BadRequest(431, "header_too_large", f"a header field over {field_max} bytes")
        raw.append((name, value))
        if len(name) in _SPECIAL_LENGTHS:
            if lname == b"content-length":
                if len(value) > 19 or not value.isdigit():
                    raise BadRequest(400, "bad_content_length", "Content-Length is not a number")
                if content_length is not None:
                    raise BadRequest(400, "bad_framing", "more than one Content-Length field")
                if chunked:
                    raise BadRequest(400, "bad_framing", _BOTH)
                content_length = int(value)
            elif lname == b"transfer-encoding":
                if chunked:
                    raise BadRequest(400, "bad_framing", "more than one Transfer-Encoding field")
                if content_length is not None:
                    raise BadRequest(400, "bad_framing", _BOTH)
                if version == _HTTP_10:
                    raise BadRequest(400, "bad_framing", "Transfer-Encoding in an HTTP/1.0 request")
                if value.lower() != b"chunked":
                    raise BadRequest(501, "unsupported_transfer_coding", "not the chunked coding")
                chunked = True
            elif lname == b"connection":
                connection.append(value)
            elif lname == b"expect":
                expect = True
            elif lname == b"host":
                if host:  # RFC 9112 §3.2: which authority would the request be for?
                    raise BadRequest(400, "bad_header", "more than one Host field")
                host = True
    if n > limits.fields:
        raise BadRequest(431, "too_many_headers", f"more than {limits.fields} header fields")
    if connection:
        tokens = {t.strip(b" \t").lower() for v in connection for t in v.split(b",")}
        close = b"close" in tokens
        keep_alive = not close if version == _HTTP_11 else b"keep-alive" in tokens and not close
    else:
        keep_alive = version == _HTTP_11
    return RequestHead(
        method, target, version, tuple(raw), content_length, chunked, keep_alive, expect
    )


def _request_line(line: bytes, limits: Limits) -> tuple[str, str, tuple[int, int]]:
    """The request line, which ``_head`` has checked for control bytes but HTAB."""
    if 9 in line:
        raise BadRequest(400, "bad_request_line", "a control byte in the request line")
    if len(line) > limits.request_line:
        raise BadRequest(414, "line_too_long", f"request line over {limits.request_line} bytes")
    parts = line.split(b" ")
    if len(parts) != 3:
        raise BadRequest(400, "bad_request_line", "not method, target and version")
    method, target, version = parts
    if not method or 58 in method.translate(_NAME):
        raise BadRequest(400, "bad_request_line", "the method is not a token")
    if not target:  # its bytes were checked with the head's
        raise BadRequest(400, "bad_request_line", "an empty request target")
    if version == b"HTTP/1.1":
        v = _HTTP_11
    elif version == b"HTTP/1.0":
        v = _HTTP_10
    elif _is_version(version):
        raise BadRequest(400, "bad_version", "an HTTP version other than 1.1 or 1.0")
    else:
        raise BadRequest(400, "bad_request_line", "not an HTTP version")
    return method.decode("ascii"), target.decode("utf-8", "surrogateescape"), v


def _is_version(version: bytes) -> bool:
    if not version.startswith(b"HTTP/"):
        return False
    major, dot, minor = version[5:].partition(b".")
    digits = major + minor
    return bool(major) and (not dot or bool(minor)) and not digits.translate(None, _DIGITS)


def _field_line(line: bytes, *, trailer: bool) -> None:
    """One field line checked on its own, each error named (a header's or a trailer's)."""
    if line[:1] in (b" ", b"\t"):
        _bad_field(trailer, "obs_fold", "a folded field line (obs-fold)")
    name, sep, value = line.partition(b":")
    if not sep:
        _bad_field(trailer, "bad_header", "a field line without a colon")
    if not name:
        _bad_field(trailer, "bad_header", "an empty field name")
    if name.translate(None, _TCHAR):
        _bad_field(trailer, "bad_header", "a field name that is not a token")
    if value.translate(None, _VALUE):
        _bad_field(trailer, "bad_header", "a control byte in a field value")


def _bad_field(trailer: bool, kind: str, reason: str) -> None:
    if trailer:
        raise BadRequest(400, "bad_chunk", "trailer: " + reason)
    raise BadRequest(400, kind, reason)


def _partial_request_line(partial: bytes, limits: Limits) -> None:
    if partial.endswith(b"\r"):  # maybe the CR of the CRLF
        partial = partial[:-1]
    if partial.translate(None, _REQUEST_LINE):
        raise BadRequest(400, "bad_request_line", "a control byte in the request line")
    if len(partial) > limits.request_line:
        raise BadRequest(414, "line_too_long", f"request line over {limits.request_line} bytes")
    parts = partial.split(b" ")
    if (
        len(parts) > 3
        or parts[0].translate(None, _TCHAR)
        or (len(parts) > 1 and not parts[0])
        or (len(parts) > 2 and not parts[1])
    ):
        raise BadRequest(400, "bad_request_line", "not method, target and version")


def _partial_field_line(partial: bytes, fields: int, limits: Limits, line_max: int) -> None:
    if partial.endswith(b"\r"):  # maybe the CR of the CRLF (or of the blank line)
        partial = partial[:-1]
    if not partial:
        return
    if fields >= limits.fields:
        raise BadRequest(431, "too_many_headers", f"more than {limits.fields} header fields")
    if partial[:1] in (b" ", b"\t"):
        raise BadRequest(400, "obs_fold", "a folded field line (obs-fold)")
    name, sep, value = partial.partition(b":")
    if (sep and not name) or name.translate(None, _TCHAR):
        raise BadRequest(400, "bad_header", "a field name that is not a token")
    if value.translate(None, _VALUE):
        raise BadRequest(400, "bad_header", "a control byte in a field value")
    # what trailing whitespace there is may yet be followed by more of the value
    if len(name) + len(value.strip(b" \t")) > limits.field or len(partial) > line_max:
        raise BadRequest(431, "header_too_large", f"a header field over {limits.field} bytes")


_SIZE, _DATA, _DATA_CR, _DATA_LF, _TRAILER, _DONE = range(6)


class ChunkedDecoder:
    """A chunked request body: bytes in (``feed``), body pieces out, ``done`` at its end."""

    __slots__ = ("_left", "_line", "_state", "_trailers", "done")

    def __init__(self) -> None:
        self._state = _SIZE
        self._left = 0  # bytes left in the chunk being read
        self._line = bytearray()  # a chunk-size or trailer line, not yet complete
        self._trailers = 0
        self.done = False  # True once the last chunk and the trailer section have been read

    def feed(self, data: bytes | bytearray | memoryview) -> tuple[list[bytes], int]:
        """Decode as much of data as possible; return (body pieces decoded, number of
        bytes of data consumed). Once done, it consumes nothing more (the rest belongs
        to the next pipelined request). Raises BadRequest(400, "bad_chunk", ...) on
        malformed framing."""
        if self.done:
            return [], 0
        if isinstance(data, memoryview):
            data = data.tobytes()
        pieces: list[bytes] = []
        pos, n = 0, len(data)
        while pos < n:
            state = self._state
            if state == _DATA:
                take = min(self._left, n - pos)
                if isinstance(data, bytes):
                    pieces.append(data[pos : pos + take])
                else:
                    pieces.append(bytes(memoryview(data)[pos : pos + take]))
                pos += take
                self._left -= take
                if not self._left:
                    self._state = _DATA_CR
            elif state == _DATA_CR:
                if data[pos] != 13:
                    raise BadRequest(400, "bad_chunk", "chunk data not followed by CRLF")
                pos += 1
                self._state = _DATA_LF
            elif state == _DATA_LF:
                if data[pos] != 10:
                    raise BadRequest(400, "bad_chunk", "chunk data not followed by CRLF")
                pos += 1
                self._state = _SIZE
            else:  # _SIZE or _TRAILER: a line, up to its LF
                room = _LINE_LIMIT + 2 - len(self._line)
                lf = data.find(b"\n", pos, pos + room)
                if lf < 0:
                    if n - pos >= room or (
                        len(self._line) + n - pos > _LINE_LIMIT and data[n - 1] != 13
                    ):
                        raise BadRequest(400, "bad_chunk", f"a chunk line over {_LINE_LIMIT} bytes")
                    self._line += data[pos:]
                    pos = n
                    break
                line = bytes(self._line) + data[pos : lf + 1] if self._line else data[pos : lf + 1]
                self._line.clear()
                pos = lf + 1
                if len(line) < 2 or line[-2] != 13:
                    raise BadRequest(400, "bad_chunk", "a bare LF in a chunk line")
                if state == _SIZE:
                    self._size_line(bytes(line[:-2]))
                elif len(line) == 2:
                    self._state = _DONE
                    self.done = True
                    break
                else:
                    self._trailers += 1
                    if self._trailers > _TRAILER_LIMIT:
                        raise BadRequest(400, "bad_chunk", f"more than {_TRAILER_LIMIT} trailers")
                    _field_line(bytes(line[:-2]), trailer=True)
        return pieces, pos

    def _size_line(self, line: bytes) -> None:
        size, semi, ext = line.partition(b";")
        if semi:
            size = size.rstrip(b" \t")  # BWS before the extension
        if not size or len(size) > 16 or size.translate(None, _HEX):
            raise BadRequest(400, "bad_chunk", "chunk size is not hexadecimal")
        if ext.translate(None, _VALUE):
            raise BadRequest(400, "bad_chunk", "a control byte in a chunk extension")
        self._left = int(size, 16)
        self._state = _DATA if self._left else _TRAILER
