"""Relaying bodies between device and backend without buffering them.

``BodyStream`` wraps the device's request body as an async iterator for the
client session, counting bytes against the size limit (a chunked body has no
Content-Length to check up front) and remembering whether it started, because
a body that began to flow must never be replayed to another server. When the
device declared a length (``expected``) the stream is forwarded with exactly
that Content-Length and ends in an error rather than short or long, so the
backend connection is dropped instead of desynchronised.
``relay_response`` copies the backend's status, headers and body to the device:
a small body of a declared length in one write with the head, any other
chunk by chunk.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from aiohttp import web

from .errors import RequestTooLarge
from .h1message import Body, DeviceRequest
from .headers import downstream_headers

if TYPE_CHECKING:
    from .upstream import Answer

__all__ = ["CHUNK", "BodyStream", "read_whole", "relay_response"]

CHUNK = 64 * 1024


class BodyStream:
    """The rest of a request body, optionally after an already-read prefix."""

    def __init__(
        self,
        prefix: bytes,
        content: Body | None,
        limit: int,
        expected: int | None = None,
    ) -> None:
        self.prefix = prefix
        self.content = content
        self.limit = limit
        self.expected = expected
        self.started = False
        self.sent = 0

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        self.started = True
        if self.prefix:
            self.sent += len(self.prefix)
            yield self.prefix
        if self.content is not None:
            async for chunk in self.content.iter_chunked(CHUNK):
                self.sent += len(chunk)
                if self.sent > self.limit:
                    raise RequestTooLarge(self.limit)
                yield chunk
        if self.expected is not None and self.sent != self.expected:
            raise ConnectionResetError(
                f"request body of {self.sent} bytes where {self.expected} were declared"
            )


async def relay_response(
    request: DeviceRequest, upstream: Answer, *, keep: int = 0
) -> tuple[web.StreamResponse, int, bytes | None]:
    """Relay ``upstream`` to the device; return the response, the body size,
    and the body itself when it is at most ``keep`` bytes (else None).

    A body of a declared length up to ``CHUNK`` (nearly every EAS answer) is
    read whole and answered with a plain ``web.Response``, whose head and
    body leave in one write; anything else is streamed chunk by chunk, the
    head first."""
    if read_whole(request, upstream):
        body = await upstream.read()
        small = web.Response(status=upstream.status, reason=upstream.reason, body=body)
        small.headers.extend(downstream_headers(upstream.headers))
        return small, len(body), body if keep and len(body) <= keep else None
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
    response.headers.extend(downstream_headers(upstream.headers))
    await request.prepare(response)
    total = 0
    kept: list[bytes] | None = [] if keep else None
    async for chunk in upstream.content.iter_chunked(CHUNK):
        total += len(chunk)
        if kept is not None and total <= keep:
            kept.append(chunk)
        else:
            kept = None
        await request.write(chunk)
    await request.write_eof()
    return response, total, None if kept is None else b"".join(kept)


def read_whole(request: DeviceRequest, upstream: Answer) -> bool:
    """Whether ``relay_response`` reads this answer whole before sending any
    of it: a declared length up to ``CHUNK`` on an answer that carries the
    body it announces (not the answer to a HEAD, nor a 1xx, 204 or 304). If
    such a body breaks off, the device has been sent nothing yet."""
    length, status = upstream.content_length, upstream.status
    if length is None or length > CHUNK or request.method == "HEAD":
        return False
    return status >= 200 and status not in (204, 304)
