"""What one idle TLS connection costs a Python server, before any HTTP.

Run: ``.venv/bin/python bench/bench_tlsconn.py [connections]``. A bare
asyncio server (a protocol that keeps its transport and nothing else)
accepts ``connections`` (2,000 by default) from a client in another process
that sends one byte on each and keeps them open; the server's RSS before and
after, divided by the count, is the cost of one held connection. Measured
side by side in one run: plain TCP; TLS as the device listener serves it
(the certificate ``sentry.certs`` generates, the gateway's own TLS layer
``sentry.proxy.tlsconn.TlsConnection``); TLS through asyncio's
``SSLProtocol`` with its read buffer shrunk to 2 KiB
(``sentry.listeners.TLS_READ_BUFFER``: the admin listener, and the device
listener before ``tlsconn``); the device listener's layer without session
tickets, and with TLS 1.2 only. The difference between plain and TLS is the
floor of a held TLS Ping's memory that no HTTP-level change can remove:
OpenSSL's per-connection state and the TLS layer's objects.
"""

from __future__ import annotations

import asyncio
import gc
import json
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path

from sentry.certs import ensure_certificate
from sentry.listeners import TLS_READ_BUFFER
from sentry.proxy.tlsconn import TlsConnection

CLIENT = r"""
import asyncio, ssl, sys
port, n, tls = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
async def main():
    ctx = None
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    sem, kept = asyncio.Semaphore(50), []
    async def one():
        async with sem:
            r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
            w.write(b"x")
            await w.drain()
            kept.append(w)
    await asyncio.gather(*(one() for _ in range(n)))
    print("open", flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


def _rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096


class _Keep(asyncio.Protocol):
    def __init__(self, seen: list[asyncio.BaseTransport]) -> None:
        self.seen = seen

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.seen.append(transport)


class _Limits:
    header_timeout = 60.0


class _Gate:
    """What ``TlsConnection`` asks of the listener's gate (``proxy/connections.py``)."""

    limits = _Limits()

    def release(self) -> None:
        pass

    def timed_out(self, phase: str) -> None:
        raise SystemExit(f"a handshake timed out ({phase})")

    def tls_failed(self, reason: str) -> None:
        raise SystemExit(f"a handshake failed: {reason}")


async def _measure(n: int, ctx: ssl.SSLContext | None, own: bool = False) -> float:
    seen: list[asyncio.BaseTransport] = []
    loop = asyncio.get_running_loop()
    if own:
        assert ctx is not None
        gate = _Gate()

        def factory() -> asyncio.Protocol:
            return TlsConnection(gate, _Keep(seen), ctx)  # type: ignore[arg-type]

        server = await loop.create_server(factory, "127.0.0.1", 0, backlog=1024)
    else:
        server = await loop.create_server(
            lambda: _Keep(seen), "127.0.0.1", 0, ssl=ctx, backlog=1024
        )
    port = server.sockets[0].getsockname()[1]
    gc.collect()
    before = _rss()
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT, str(port), str(n), "1" if ctx else "0"],
        stdout=subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(120):
            while len(seen) < n:
                await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # the handshakes' last records are in
        gc.collect()
        return (_rss() - before) / n / 1024
    finally:
        client.kill()
        client.wait()
        for t in seen:
            t.abort()
        server.close()
        await asyncio.sleep(0.5)


def _context(cert: Path, key: Path, *, tickets: bool = True, tls12: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    if not tickets:
        ctx.num_tickets = 0
    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


CASES = (
    "plain TCP",
    "TLS (device listener)",
    "TLS (asyncio SSLProtocol)",
    "TLS, no session tickets",
    "TLS 1.2 only",
)


async def one_case(name: str, n: int) -> float:
    """One case in this process (memory freed by another case would be reused)."""
    import asyncio.sslproto

    asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER  # as the gateway does
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp) / "c.pem", Path(tmp) / "k.pem"
        ensure_certificate(cert, key, "localhost")
        ctx = {
            "plain TCP": None,
            "TLS (device listener)": _context(cert, key),
            "TLS (asyncio SSLProtocol)": _context(cert, key),
            "TLS, no session tickets": _context(cert, key, tickets=False),
            "TLS 1.2 only": _context(cert, key, tls12=True),
        }[name]
        own = ctx is not None and name != "TLS (asyncio SSLProtocol)"
        return await _measure(n, ctx, own)


def main(n: int) -> dict[str, float]:
    """Every case in a process of its own, one after the other."""
    out = {}
    for name in CASES:
        run = subprocess.run(
            [sys.executable, __file__, "--case", name, str(n)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        out[name] = float(run.stdout.strip().splitlines()[-1])
    return out


if __name__ == "__main__":
    if sys.argv[1:2] == ["--case"]:
        print(asyncio.run(one_case(sys.argv[2], int(sys.argv[3]))))
        sys.exit(0)
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    result = main(count)
    print(f"KiB of server RSS per idle connection ({count:,} connections, {ssl.OPENSSL_VERSION}):")
    base = result["plain TCP"]
    for name, kib in result.items():
        extra = "" if name == "plain TCP" else f"  (+{kib - base:.1f} KiB over plain)"
        print(f"  {name:<26} {kib:6.1f}{extra}")
    print(json.dumps(result))
