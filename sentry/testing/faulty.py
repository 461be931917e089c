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
* ``short_body_backend()`` answers OPTIONS in full, and every other request
  with a 200 whose body stops short of its Content-Length before the
  connection closes (a server that crashed mid-answer).
* ``CuttableProxy`` forwards TCP to a server until ``cut()`` (a gateway node
  cut off from its PostgreSQL while the other nodes still reach it), and can
  dribble the server's answers in small pieces.

Each counts what it saw, so a test waits for a positive signal (a connection
accepted, a request answered) instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

from aiohttp import web

__all__ = [
    "CuttableProxy",
    "ShortBodyBackend",
    "SilentBackend",
    "StatusBackend",
    "refusing_port",
    "short_body_backend",
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
class ShortBodyBackend:
    """A server whose answers end before their declared length."""

    url: str
    cut_short: int = 0


@contextlib.asynccontextmanager
async def short_body_backend(host: str = "127.0.0.1") -> AsyncIterator[ShortBodyBackend]:
    """OPTIONS: a whole 200. Anything else: ``Content-Length: 100``, 10 bytes, close."""
    backend = ShortBodyBackend("")

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            if head.startswith(b"OPTIONS "):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            else:
                backend.cut_short += 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, host, 0)
    backend.url = url_of(server.sockets[0])
    try:
        yield backend
    finally:
        server.close()
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


class CuttableProxy:
    """A TCP proxy on loopback that can cut its traffic (a node cut off from
    its database server while the server stays up for the others).

    It runs on an event loop of its own in a thread, so processes and sync
    tests can use it. ``cut()`` closes every connection it carries and
    closes new ones at once (the port stays bound: nothing else takes it);
    ``restore()`` lets connections through again. With ``dribble=(n, s)`` the
    server's answers reach the client ``n`` bytes at a time, ``s`` seconds
    apart (an answer that arrives in many TCP segments). ``unix_path``: the
    server listens on that Unix socket (a throwaway PostgreSQL) instead."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        host: str = "127.0.0.1",
        *,
        dribble: tuple[int, float] | None = None,
        unix_path: str | None = None,
    ) -> None:
        self.target = (target_host, target_port)
        self.unix_path = unix_path  # the server's Unix socket instead of host:port
        self.dribble = dribble  # (bytes, seconds): answers sent in pieces, a pause after each
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((host, 0))
        self._sock.listen(128)
        self.host, self.port = self._sock.getsockname()[:2]
        self.cut_off = False
        self.accepted = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cuttable-proxy", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, sock=self._sock))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            for w in list(self._writers):
                w.close()
            self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.cut_off:
            writer.transport.abort()
            return
        try:
            if self.unix_path is not None:
                up_reader, up_writer = await asyncio.open_unix_connection(self.unix_path)
            else:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(
            src: asyncio.StreamReader, dst: asyncio.StreamWriter, piece: tuple[int, float] | None
        ) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    step = len(data) if piece is None else piece[0]
                    for i in range(0, len(data), step):
                        dst.write(data[i : i + step])
                        await dst.drain()
                        if piece is not None:
                            await asyncio.sleep(piece[1])
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer, None), pipe(up_reader, writer, self.dribble))
        self._writers -= {writer, up_writer}

    def cut(self) -> None:
        """Drop every connection now and every new one until ``restore``."""

        def drop() -> None:
            self.cut_off = True
            for w in list(self._writers):
                w.transport.abort()

        self._loop.call_soon_threadsafe(drop)

    def restore(self) -> None:
        def allow() -> None:
            self.cut_off = False

        self._loop.call_soon_threadsafe(allow)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
