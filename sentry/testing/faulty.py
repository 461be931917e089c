"""Backends that fail the way real ones do, for failure and health tests.

Approach. Each is a real socket on loopback whose port the kernel chose and
the test reads back; no port is ever guessed free (a port that "was free a
moment ago" can be taken by another process before the test uses it):

* ``refusing_port()`` binds a socket and never listens on it, so every
  connection is refused for as long as the ``with`` block holds the port and
  nothing else can take it. ``start_backend(config, sock=...)`` can later
  serve on that very socket: a server that is down, then up.
* ``silent_backend()`` accepts connections and never sends a byte (a hung
  server: the caller's timeout fires).
* ``status_backend(status)`` answers every request with ``status`` (an
  overloaded or broken server behind a healthy TCP port).

Each counts what it saw, so a test waits for a positive signal (a connection
accepted, a request answered) instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

from aiohttp import web

__all__ = [
    "SilentBackend",
    "StatusBackend",
    "refusing_port",
    "silent_backend",
    "status_backend",
    "url_of",
]


@contextlib.contextmanager
def refusing_port(host: str = "127.0.0.1") -> Iterator[socket.socket]:
    """A bound, non-listening TCP socket: connections to its port are refused."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.bind((host, 0))
        yield sock
    finally:
        sock.close()


def url_of(sock: socket.socket, scheme: str = "http") -> str:
    """``scheme://host:port`` of a bound socket."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


@dataclass
class SilentBackend:
    """A server that accepts and then says nothing."""

    url: str
    accepted: int = 0
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)


@contextlib.asynccontextmanager
async def silent_backend(host: str = "127.0.0.1") -> AsyncIterator[SilentBackend]:
    """Accept every connection, read what comes, never answer."""
    backend = SilentBackend("")

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        backend.accepted += 1
        backend._writers.append(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass

    server = await asyncio.start_server(hold, host, 0)
    backend.url = url_of(server.sockets[0])
    try:
        yield backend
    finally:
        server.close()
        for writer in backend._writers:
            writer.close()
        await server.wait_closed()


@dataclass
class StatusBackend:
    """A server that answers every request with one HTTP status."""

    url: str
    status: int
    answered: int = 0


@contextlib.asynccontextmanager
async def status_backend(status: int, host: str = "127.0.0.1") -> AsyncIterator[StatusBackend]:
    """Answer every method and path with ``status`` and a short text body."""
    backend = StatusBackend("", status)

    async def answer(_request: web.Request) -> web.Response:
        backend.answered += 1
        return web.Response(status=status, text=f"status {status}\n")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, 0)
        await site.start()
        backend.url = f"http://{host}:{runner.addresses[0][1]}"
        yield backend
    finally:
        await runner.cleanup()
