"""Exact message framing: the backend gets exactly the bytes the gateway forwards.

Approach. Request smuggling lives in the gap between how two parsers frame
one byte stream. The gateway closes that gap in three places:

1. **Refuse what could be read two ways** (``check_head``, pure, on the raw
   header list ``h1request.py`` parsed): a Content-Length together with a
   Transfer-Encoding, a repeated Content-Length / Transfer-Encoding /
   Content-Encoding, a Transfer-Encoding on HTTP/1.0 (RFC 9112 §6.1) or
   other than ``chunked`` (501), and any body on OPTIONS. OPTIONS is refused
   (400) rather than silently stripped: no ActiveSync client sends a body on
   OPTIONS (MS-ASHTTP 2.2.3), so one is a bug or an attack, and a refusal is
   logged and counted where a drop would hide it. The same pass checks the
   head limits of ``gateway.header_limits`` exactly (request line, one field
   as name plus value, number of fields), which the parser enforces already.
   The parser itself already rejects obs-fold, bare LF, NUL and malformed
   Content-Length before any of this runs.
2. **Never copy framing headers** (``frame_upstream``): Content-Length and
   Transfer-Encoding are dropped from what is copied and set again from the
   body actually sent: a read body gets its length; a streamed body keeps
   the declared length (the server reads exactly that many raw bytes) or goes
   chunked when it came chunked.
3. **Raw bytes only**: the device listener never decompresses a body
   (``h1server.Body`` hands over the bytes as framed), so a
   ``Content-Encoding: gzip`` body is forwarded as the compressed
   bytes with its header and its compressed length. Access control still
   needs to read Provision/Settings/Ping/Sync bodies, so
   ``decoded_for_inspection`` decompresses a copy (gzip, deflate), bounded
   by the inspection limit, and refuses trailing data or a truncated stream:
   what the gateway inspects is what a decompressing backend would read.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from multidict import CIMultiDict

from sentry.settings import HeaderLimitSettings

from .errors import (
    FramingError,
    HeaderTooLarge,
    RequestLineTooLong,
    RequestTooLarge,
    UnsupportedContentCoding,
    UnsupportedTransferCoding,
)
from .forward import BodyStream
from .h1message import DeviceRequest

__all__ = [
    "BODYLESS_METHODS",
    "Framing",
    "check_head",
    "check_request",
    "decoded_for_inspection",
    "frame_upstream",
]

BODYLESS_METHODS = frozenset({"OPTIONS"})
_SINGLE = (b"content-length", b"transfer-encoding", b"content-encoding")
_SINGLE_LENGTHS = frozenset(len(name) for name in _SINGLE)
_WBITS = {"gzip": 31, "x-gzip": 31, "deflate": 15}


@dataclass(frozen=True)
class Framing:
    """How the request body is framed, once the head is known to be unambiguous."""

    length: int | None  # the declared Content-Length (None: chunked or no body)
    chunked: bool
    content_encoding: str | None

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.length)


def check_head(
    method: str,
    target: bytes,
    version: tuple[int, int],
    raw_headers: Sequence[tuple[bytes, bytes]],
    limits: HeaderLimitSettings,
) -> Framing:
    """The framing of a parsed head, or ``FramingError`` (with its wire status).

    One pass over the fields checks every size and picks out the framing
    fields (a name of another length is not one of them); a size error comes
    before any other, and a repeated framing field is named in the order the
    fields came, as two passes would."""
    line, line_max = len(method) + 1 + len(target) + 1 + len("HTTP/1.1"), limits.request_line_bytes
    if line > line_max:
        raise RequestLineTooLong(f"request line of {line} bytes (limit {line_max})")
    if len(raw_headers) > limits.fields:
        raise HeaderTooLarge(f"{len(raw_headers)} header fields (limit {limits.fields})")
    field_bytes = limits.field_bytes
    found: list[tuple[bytes, bytes]] = []  # the framing fields, in order
    for name, value in raw_headers:
        if len(name) + len(value) > field_bytes:
            shown = name[:64].decode("latin-1")
            size = len(name) + len(value)
            raise HeaderTooLarge(f"header {shown} of {size} bytes (limit {field_bytes})")
        if len(name) in _SINGLE_LENGTHS:
            lowered = name.lower()
            if lowered in _SINGLE:
                found.append((lowered, value))
    te = cl = ce = None
    if len(found) > 1:
        seen: dict[bytes, list[bytes]] = {}
        for lowered, value in found:
            seen.setdefault(lowered, []).append(value)
        for lowered, values in seen.items():
            if len(values) > 1:
                raise FramingError(f"repeated {lowered.decode()} header")
    for lowered, value in found:
        if lowered == b"content-length":
            cl = value
        elif lowered == b"transfer-encoding":
            te = value
        else:
            ce = value
    framing = Framing(_length(cl), _chunked(te, cl, version), _coding(ce))
    if method in BODYLESS_METHODS and framing.has_body:
        raise FramingError(f"{method} carries no body")
    return framing


def _length(cl: bytes | None) -> int | None:
    if cl is None:
        return None
    if not cl.isdigit():  # the parser already refuses this; never trust one check blindly
        raise FramingError("Content-Length is not a decimal number")
    return int(cl)


def _chunked(te: bytes | None, cl: bytes | None, version: tuple[int, int]) -> bool:
    if te is None:
        return False
    if cl is not None:
        raise FramingError("both Transfer-Encoding and Content-Length")
    if version < (1, 1):
        raise FramingError("Transfer-Encoding on HTTP/1.0")
    if te.strip().lower() != b"chunked":
        raise UnsupportedTransferCoding("transfer coding other than chunked")
    return True


def _coding(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1").strip().lower()


def check_request(request: DeviceRequest, limits: HeaderLimitSettings) -> Framing:
    """``check_head`` for a device's request."""
    head = request.head
    target = head.target.encode("utf-8", "surrogateescape")
    return check_head(head.method, target, head.version, head.raw_headers, limits)


def decoded_for_inspection(body: bytes, coding: str | None, limit: int) -> bytes:
    """The body as a decompressing backend would read it (for inspection only)."""
    if coding in (None, "", "identity"):
        return body
    wbits = _WBITS.get(coding or "")
    if wbits is None:
        raise UnsupportedContentCoding(f"content coding {coding!r} on an inspected command")
    inflater = zlib.decompressobj(wbits)
    try:
        plain = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise FramingError(f"corrupt {coding} body") from None
    if len(plain) > limit:
        raise RequestTooLarge(limit)
    if not inflater.eof:
        raise FramingError(f"truncated {coding} body")
    if inflater.unused_data:
        raise FramingError(f"data after the end of the {coding} body")
    return plain


def frame_upstream(headers: CIMultiDict[str], body: bytes | BodyStream) -> bytes | BodyStream:
    """Set the framing of the forwarded request from the body actually sent
    (an empty OPTIONS says ``Content-Length: 0``); return what to send."""
    headers.popall("Content-Length", None)
    headers.popall("Transfer-Encoding", None)
    if isinstance(body, BodyStream):
        if body.expected is not None:
            headers["Content-Length"] = str(body.expected)
        return body  # without a length the client session sends it chunked
    headers["Content-Length"] = str(len(body))
    return body
