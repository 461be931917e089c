"""Errors of the data path, with the HTTP answer each one gets.

    UpstreamError                 talking to a backend failed      (502)
    ├── NoHealthyServer           every server of the pool is down (503 + Retry-After)
    ├── UpstreamConnectError      could not connect / TLS failed   (502; safe to fail over)
    ├── UpstreamTimeout           the backend did not answer in time (504)
    └── UpstreamBroken            the connection broke mid-exchange (502)
    RequestTooLarge               the client's body is over the limit (413)

aiohttp's client exceptions are translated into these in one place,
``map_client_errors``; nothing else in the gateway catches aiohttp errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp

__all__ = [
    "NoHealthyServer",
    "RequestTooLarge",
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
    retry_after: int | None = None  # seconds, sent as Retry-After when set

    def __init__(self, message: str, server: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.server = server


class NoHealthyServer(UpstreamError):
    http_status = 503
    kind = "no_healthy_server"

    def __init__(self, pool: str, retry_after: int) -> None:
        super().__init__(f"no healthy server in pool {pool!r}")
        self.retry_after = retry_after


class UpstreamConnectError(UpstreamError):
    kind = "connect"


class UpstreamTimeout(UpstreamError):
    http_status = 504
    kind = "timeout"


class UpstreamBroken(UpstreamError):
    kind = "broken"


class RequestTooLarge(Exception):
    """The request body exceeds ``gateway.max_request_bytes``."""

    http_status = 413

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds {limit} bytes")
        self.limit = limit


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
