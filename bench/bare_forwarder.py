"""``python -m bench.bare_forwarder``: the least any Python proxy must do.

The baseline the gateway is measured against: one aiohttp server, one
``ClientSession`` with an unlimited connection pool, and per request only
what forwarding needs: drop the hop-by-hop headers, stream the request body
to the upstream and the answer back chunk by chunk. No parsing, no policy, no
logging, no metrics. Small request bodies are read whole (see ``_body``).
It prints one JSON line with its port once it listens and serves until
SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import ssl
from collections.abc import AsyncIterator, Mapping

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from bench.proc import raise_nofile

__all__ = ["build_app", "main"]

HOP_BY_HOP = frozenset(
    ("connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
     "transfer-encoding", "upgrade", "host")
)  # fmt: skip
SMALL = 64 * 1024
SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM: web.AppKey[str] = web.AppKey("upstream", str)


def _clean(headers: Mapping[str, str]) -> CIMultiDict[str]:
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in HOP_BY_HOP)


async def _body(request: web.Request) -> bytes | aiohttp.StreamReader | None:
    """A small body (declared <= 64 KiB) is read whole, anything else streamed:
    streaming a 300-byte body through aiohttp's StreamReader payload costs an
    mmap/mremap/munmap per request, which no careful proxy would pay."""
    if not request.body_exists:
        return None
    size = request.content_length
    if size is not None and size <= SMALL:
        return await request.read()
    return request.content


async def forward(request: web.Request) -> web.StreamResponse:
    session = request.app[SESSION]
    async with session.request(
        request.method,
        request.app[UPSTREAM] + request.path_qs,
        headers=_clean(request.headers),
        data=await _body(request),
        allow_redirects=False,
        skip_auto_headers=("User-Agent",),
    ) as upstream:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        response.headers.extend(_clean(upstream.headers))
        await response.prepare(request)
        async for chunk in upstream.content.iter_chunked(64 * 1024):
            await response.write(chunk)
        await response.write_eof()
        return response


async def _session(app: web.Application) -> AsyncIterator[None]:
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30)
    app[SESSION] = aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=None, sock_read=3600),
        cookie_jar=aiohttp.DummyCookieJar(),
    )
    yield
    await app[SESSION].close()


def build_app(upstream: str) -> web.Application:
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/")
    app.cleanup_ctx.append(_session)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


async def serve(args: argparse.Namespace) -> None:
    runner = web.AppRunner(
        build_app(args.upstream), access_log=None, handle_signals=False, shutdown_timeout=2.0
    )
    await runner.setup()
    tls = None
    if args.tls_cert:  # as a plain aiohttp server serves TLS: asyncio's SSLProtocol
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    site = web.TCPSite(runner, args.host, args.port, backlog=4096, ssl_context=tls)
    await site.start()
    print(json.dumps({"event": "ready", "port": runner.addresses[0][1]}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.bare_forwarder")
    p.add_argument("--upstream", required=True, help="http://127.0.0.1:PORT of the backend")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--tls-cert", default="", help="serve TLS with this certificate (PEM)")
    p.add_argument("--tls-key", default="", help="and this key (PEM)")
    args = p.parse_args()
    raise_nofile()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))


if __name__ == "__main__":
    main()
