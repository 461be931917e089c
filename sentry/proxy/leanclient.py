"""A lean HTTP/1.1 client for the upstream leg of requests whose body the
gateway holds whole.

Approach. Every phone holds a Ping open, so a held Ping's cost is what
sizes a node, and every request pays the client leg. Through aiohttp's
client the upstream leg of one held Ping cost 8.1 KB of Python objects
(the request and response objects, a response parser, a stream reader,
the request coroutine's frames: ``python -m bench.held_memory``) and a
revocation cancelled its way through them; per request it was about 14 % of the gateway's CPU.
``LeanClient`` sends a request whose body is ``bytes`` (nearly every EAS
request: declared lengths up to 64 KiB are read whole, ``forwarding.py``):
the request leaves in one write (at the end of the loop turn, with the
turn's others: ``turnwrite.py``), and what waits is one small protocol
object (``Conn``, ``leanconn.py``) with a sans-I/O ``AnswerParser``
(``h1answer.py``) and one future. A revocation cancels that future; the
connection stops reading and is closed a quarter second later with the
others abandoned meanwhile, after the devices' answers (``retire``). A
streamed (chunked or large) body, the Provision the gateway sends itself
and the health checks stay on aiohttp's client.

It keeps the semantics of the aiohttp path it stands in for (``upstream.py``):
the same request bytes (Host from the server URL, the headers as given,
the path as yarl quotes it), ``sock_connect`` and ``sock_read`` timeouts
(the read timer restarts with every byte received), connections kept idle
for ``KEEPALIVE_SECONDS`` and reused by the next request to that origin
(an idempotent request whose reused connection turns out closed is sent
once more, as aiohttp does), TLS verified as the pool's ``tls_verify``
says. Its errors are the data path's own (``errors.py``): a connect failure
is ``UpstreamConnectError`` whose cause (``ConnectFailed``) the health
checks classify like aiohttp's; no answer within the read timeout is
``UpstreamTimeout``; a malformed answer or one cut short is
``UpstreamBroken``. ``LeanResponse`` offers the part of
``aiohttp.ClientResponse`` the relay uses (status, reason, headers,
``content_length``, ``read``, ``content.read``/``iter_chunked``,
``release``, ``close``); a body is streamed with flow control (reading
pauses above ``BUFFER_LIMIT`` bytes not yet relayed).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Mapping

from multidict import CIMultiDict
from yarl import URL

from .errors import ConnectFailed, UpstreamBroken, UpstreamConnectError
from .h1answer import AnswerParser
from .leanconn import BUFFER_LIMIT, Conn, LeanResponse, Origin, raise_for
from .turnwrite import TurnWriter

__all__ = [
    "BUFFER_LIMIT",
    "KEEPALIVE_SECONDS",
    "RETIRE_SECONDS",
    "LeanClient",
    "LeanResponse",
    "request_target",
]

KEEPALIVE_SECONDS = 30.0  # as the aiohttp connector's keepalive_timeout
RETIRE_SECONDS = 0.25  # an abandoned request's connection is closed this much later
RETIRE_BATCH = 200  # connections closed per loop callback
_DNS_TTL = 10.0  # seconds a resolved name is reused (aiohttp's resolver cache)
_IDEMPOTENT = frozenset(("GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"))


class LeanClient:
    """Connections to backends for requests with whole bodies, idle ones kept per origin."""

    def __init__(self, *, verify: bool) -> None:
        self.verify = verify
        self._ssl: ssl.SSLContext | None = None
        self._idle: dict[Origin, dict[Conn, None]] = {}
        self._resolved: dict[tuple[str, int], tuple[float, list[tuple[str, int]]]] = {}
        self._open: set[Conn] = set()
        self._retired: list[Conn] = []
        self._retiring: asyncio.Handle | None = None
        self._writer = TurnWriter()  # a loop turn's requests leave together (turnwrite.py)

    async def request(
        self,
        url: URL,
        method: str,
        path_qs: str,
        headers: Mapping[str, str] | CIMultiDict[str],
        body: bytes,
        *,
        server: str,
        connect_timeout: float | None,
        read_timeout: float | None,
    ) -> LeanResponse:
        """Send one request to ``url``'s origin; return once the answer's head is in.

        An idempotent request (OPTIONS, HEAD, GET) whose reused connection
        the backend had closed before a byte of answer came back is sent
        once more on a new connection, as aiohttp's client does; any other
        is not (the backend may have acted on it)."""
        retry = method in _IDEMPOTENT
        while True:
            conn, reused = await self._send(
                url, method, path_qs, headers, body, server, connect_timeout
            )
            if read_timeout is not None:
                conn.arm(read_timeout)
            parser = conn.parser
            assert parser is not None
            try:
                while parser.head is None and conn.error is None:
                    await conn.wait()
            except asyncio.CancelledError:
                self.retire(conn)  # the backend request is abandoned
                raise
            if conn.error is None:
                return LeanResponse(conn, server)
            conn.abort()
            if not (retry and reused and not conn.received):
                raise_for(conn.error, server)
            retry = False

    async def _send(
        self,
        url: URL,
        method: str,
        path_qs: str,
        headers: Mapping[str, str] | CIMultiDict[str],
        body: bytes,
        server: str,
        connect_timeout: float | None,
    ) -> tuple[Conn, bool]:
        """Write the request on an idle or a new connection (its own frame, so
        the request's bytes and URL are not kept while the answer is awaited);
        whether the connection was reused."""
        origin, host, raw_path_qs = request_target(url, path_qs)
        data = _request_bytes(method, raw_path_qs, host, headers, body)
        conn = self._idle_conn(origin)
        reused = conn is not None
        if conn is None:
            conn = await self._connect(origin, server, connect_timeout)
        conn.parser = AnswerParser(no_body=method == "HEAD")
        conn.error = None
        conn.received = False
        conn.whole = False
        assert conn.transport is not None
        self._writer.write(conn.transport, data)
        return conn, reused

    def _idle_conn(self, origin: Origin) -> Conn | None:
        idle = self._idle.get(origin)
        while idle:
            conn, _ = idle.popitem()  # the most recently parked
            conn.busy()
            if not conn.lost and conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    async def _connect(self, origin: Origin, server: str, timeout: float | None) -> Conn:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        ctx = self._context() if scheme == "https" else None
        last: BaseException | None = None
        try:
            async with asyncio.timeout(timeout):
                for addr, port_ in await self._addresses(host, port):
                    try:
                        _, conn = await loop.create_connection(
                            lambda: Conn(self, origin), addr, port_, ssl=ctx,
                            server_hostname=host if ctx is not None else None,
                        )  # fmt: skip
                    except (OSError, ssl.SSLError) as exc:
                        last = exc
                        if isinstance(exc, ssl.SSLError):
                            break  # the server answered: another address will not verify better
                        continue
                    self._open.add(conn)
                    return conn
        except TimeoutError as exc:
            last = exc
        except OSError as exc:  # name resolution
            last = exc
        cause = ConnectFailed(host, last or OSError("no address"))
        raise UpstreamConnectError(f"cannot connect: {cause}", server) from cause

    async def _addresses(self, host: str, port: int) -> list[tuple[str, int]]:
        literal = _ip_literal(host)
        if literal is not None:
            return [(literal, port)]
        now = time.monotonic()
        cached = self._resolved.get((host, port))
        if cached is not None and cached[0] > now:
            return cached[1]
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
        addrs = list(dict.fromkeys((str(i[4][0]), int(i[4][1])) for i in infos))
        self._resolved[(host, port)] = (now + _DNS_TTL, addrs)
        return addrs

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            ctx = ssl.create_default_context()
            if not self.verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self._ssl = ctx
        return self._ssl

    def park(self, conn: Conn) -> None:
        """Keep a connection whose answer is complete for the next request."""
        conn.parser = None
        conn.resume()
        conn.idle_for(KEEPALIVE_SECONDS)
        self._idle.setdefault(conn.origin, {})[conn] = None

    def retire(self, conn: Conn) -> None:
        """A request abandoned (revoked, the device gone): the connection reads
        no more and is closed ``RETIRE_SECONDS`` later, in batches. A bulk
        revocation cancels a thousand requests at once; closing each socket at
        once would interleave a thousand close(2) calls with the answers the
        devices are waiting for (measured: p99 94-121 -> 89-94 ms after a bulk
        block of 1,000 returns)."""
        conn.stop_timer()
        conn.parser = None
        if conn.transport is None or conn.lost:
            return
        conn.transport.pause_reading()
        self._retired.append(conn)
        if self._retiring is None:
            loop = asyncio.get_running_loop()
            self._retiring = loop.call_at(loop.time() + RETIRE_SECONDS, self._close_retired)

    def _close_retired(self) -> None:
        """Close a batch of retired connections; the rest after other work ran."""
        batch, self._retired = self._retired[:RETIRE_BATCH], self._retired[RETIRE_BATCH:]
        for conn in batch:
            conn.abort()
        self._retiring = None
        if self._retired:
            self._retiring = asyncio.get_running_loop().call_soon(self._close_retired)

    def forget(self, conn: Conn) -> None:
        """A connection closed: no longer open, not idle."""
        self._open.discard(conn)
        conn.stop_timer()
        idle = self._idle.get(conn.origin)
        if idle is not None:
            idle.pop(conn, None)

    @property
    def idle(self) -> int:
        """Connections parked for reuse."""
        return sum(len(v) for v in self._idle.values())

    @property
    def retired(self) -> int:
        """Abandoned connections waiting for their close."""
        return len(self._retired)

    @property
    def open(self) -> int:
        """Connections open (idle or carrying a request)."""
        return len(self._open)

    def close(self) -> None:
        """Close every connection (idle, in use or retired)."""
        if self._retiring is not None:
            self._retiring.cancel()
            self._retiring = None
        self._retired.clear()
        for conn in list(self._open):
            conn.abort()
        self._idle.clear()


@functools.lru_cache(maxsize=256)
def _ip_literal(host: str) -> str | None:
    """``host`` as an address to connect to when it is an IP address (an IPv6
    one without its brackets), else None: a name to resolve. Remembered per
    host: a storm's reconnects each open a backend connection."""
    bare = host.strip("[]")
    try:
        ipaddress.ip_address(bare)
    except ValueError:
        return None
    return bare


@functools.lru_cache(maxsize=256)
def _origin(url: URL) -> tuple[Origin, str]:
    """A server URL's origin and its ``Host`` value (remembered per URL)."""
    return (url.scheme, url.raw_host or "", url.port or 0), url.host_port_subcomponent or ""


# A path and query yarl leaves exactly as they are: unreserved characters and
# the query's separators, no "%" (yarl normalises escapes), no "." in the path
# (dot segments are removed), no "//" at the start (an authority).
_PLAIN_TARGET = re.compile(r"/(?!/)[A-Za-z0-9_~/-]*(?:\?[A-Za-z0-9._~=&+/-]+)?")


def request_target(url: URL, path_qs: str) -> tuple[Origin, str, str]:
    """Where ``path_qs`` goes when sent to server ``url``: the origin, the
    ``Host`` value and the path and query as sent, as
    ``url.join(URL(path_qs))`` gives them (what aiohttp's client sends). The
    plain path and query of nearly every EAS request are that already, and
    are taken as they are without building two URLs."""
    if _PLAIN_TARGET.fullmatch(path_qs):
        origin, host = _origin(url)
        return origin, host, path_qs
    target = url.join(URL(path_qs))
    origin = (target.scheme, target.raw_host or "", target.port or 0)
    return origin, target.host_port_subcomponent or "", target.raw_path_qs


def _request_bytes(
    method: str,
    raw_path_qs: str,
    host: str,
    headers: Mapping[str, str] | CIMultiDict[str],
    body: bytes,
) -> bytes:
    """The request as aiohttp's client would send it: the request line, Host,
    the given headers, the body. A control character in any of them (which
    the device side's parser already refuses) is refused here too."""
    lines = [f"{method} {raw_path_qs} HTTP/1.1", f"Host: {host}"]
    lines.extend(f"{k}: {v}" for k, v in headers.items() if k.lower() != "host")
    text = "\r\n".join(lines)
    seps = len(lines) - 1  # any other CR or LF came from a field: refused
    if text.count("\r") != seps or text.count("\n") != seps or "\0" in text:
        raise UpstreamBroken("control character in the request head")
    if " " in method or not method.isascii():
        raise UpstreamBroken("control character in the request head")
    return text.encode("utf-8", "surrogateescape") + b"\r\n\r\n" + body
