"""Errors of the data path, with the HTTP answer each one gets.

    UpstreamError                 talking to a backend failed      (502)
    ├── NoHealthyServer           every server of the pool is down (503 + Retry-After)
    ├── UpstreamConnectError      could not connect / TLS failed   (502; safe to fail over)
    ├── UpstreamTimeout           the backend did not answer in time (504)
    └── UpstreamBroken            the connection broke mid-exchange (502)
    RequestTooLarge               the client's body is over the limit (413)
    FramingError                  the request's framing is ambiguous or unsupported (400)
    ├── BrokenBody                a chunked body broke its framing mid-way (400)
    ├── RequestLineTooLong        over gateway.header_limits.request_line_bytes (414)
    ├── HeaderTooLarge            a field or the field count over the limits (431)
    ├── UnsupportedContentCoding  an inspected body in a coding we cannot read (415)
    └── UnsupportedTransferCoding a transfer coding other than chunked (501)

Each class carries the wire status (``http_status``) and the short fixed text
the device gets (``public_text``): an answer never contains a backend URL, a
header or an exception text; those go to the log (redacted) and the metrics.

aiohttp's client exceptions are translated into these in one place,
``map_client_errors``, the one error boundary of the backend side: sending a
request (``upstream.py``), relaying its answer (``handler._relay``) and the
active health check (which classifies the original exception, kept as the
``__cause__``); nothing else in the data path catches aiohttp errors. The
lean client (``leanclient.py``) raises these classes itself; the cause of
its ``UpstreamConnectError`` is a ``ConnectFailed`` (host and OS error), which
the health checks classify.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp

__all__ = [
    "BrokenBody",
    "ConnectFailed",
    "FramingError",
    "HeaderTooLarge",
    "NoHealthyServer",
    "RequestLineTooLong",
    "RequestTooLarge",
    "UnsupportedContentCoding",
    "UnsupportedTransferCoding",
    "UpstreamBroken",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamTimeout",
    "map_client_errors",
]


class UpstreamError(Exception):
    """A backend could not be used; ``kind`` is the metric label."""

    http_status = 502
    kind = "error"
    public_text = "bad gateway"
    retry_after: int | None = None  # seconds, sent as Retry-After when set

    def __init__(self, message: str, server: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.server = server


class ConnectFailed(Exception):
    """Why a connection to ``host`` could not be made (the cause the health
    checks classify): ``os_error`` is an ``OSError``, an ``ssl`` error or a
    ``TimeoutError``."""

    def __init__(self, host: str, os_error: BaseException) -> None:
        super().__init__(f"{host}: {os_error}")
        self.host = host
        self.os_error = os_error


class NoHealthyServer(UpstreamError):
    http_status = 503
    kind = "no_healthy_server"
    public_text = "service unavailable"

    def __init__(self, pool: str, retry_after: int) -> None:
        super().__init__(f"no healthy server in pool {pool!r}")
        self.retry_after = retry_after


class UpstreamConnectError(UpstreamError):
    kind = "connect"


class UpstreamTimeout(UpstreamError):
    http_status = 504
    kind = "timeout"
    public_text = "gateway timeout"


class UpstreamBroken(UpstreamError):
    kind = "broken"


class RequestTooLarge(Exception):
    """The request body exceeds ``gateway.max_request_bytes``."""

    http_status = 413

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds {limit} bytes")
        self.limit = limit


class FramingError(Exception):
    """The request head cannot be forwarded as sent; ``kind`` is the metric label."""

    http_status = 400
    kind = "framing"
    public_text = "bad request framing"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BrokenBody(FramingError):
    """The device's chunked body broke its own framing mid-way (400; the
    connection is closed)."""

    kind = "broken_body"


class RequestLineTooLong(FramingError):
    http_status = 414
    kind = "request_line_too_long"
    public_text = "request line too long"


class HeaderTooLarge(FramingError):
    http_status = 431
    kind = "header_too_large"
    public_text = "request header fields too large"


class UnsupportedContentCoding(FramingError):
    http_status = 415
    kind = "content_coding"
    public_text = "unsupported content coding"


class UnsupportedTransferCoding(FramingError):
    http_status = 501
    kind = "transfer_coding"
    public_text = "unsupported transfer coding"


@contextmanager
def map_client_errors(server: str) -> Iterator[None]:
    """Translate aiohttp client errors raised inside the block."""
    try:
        yield
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
        raise UpstreamConnectError(f"cannot connect: {exc}", server) from exc
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise UpstreamTimeout("backend did not answer in time", server) from exc
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
        raise UpstreamBroken(f"connection broke: {exc!r}", server) from exc
    except aiohttp.ClientError as exc:
        too_large = _cause(exc, RequestTooLarge)
        if too_large is not None:  # our own body limit, raised while aiohttp sent the body
            raise too_large from None
        raise UpstreamBroken(f"backend error: {exc!r}", server) from exc


def _cause(exc: BaseException, kind: type[RequestTooLarge]) -> RequestTooLarge | None:
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
