"""What a forwarded request's headers cost, from the device's bytes to the backend's.

Run: ``.venv/bin/python bench/bench_headers.py [rounds]``. The headers of a
phone's Sync (the eight fields the bench's EAS mix sends, plus
X-MS-PolicyKey and Accept-Encoding) go the gateway's way: decoded into the
request's ``CIMultiDictProxy`` (``DeviceRequest.headers``, needed anyway by
the request's parse and authentication), then the upstream leg's part:
the X-Forwarded-For chain, ``upstream_headers`` (hop-by-hop and forwarding
fields dropped), ``frame_upstream`` (Content-Length from the body) and the
lean client's ``_request_bytes`` (the request's bytes). The decoding alone
is the baseline; the rest is what a bytes-only pipeline could save at most.
"""

from __future__ import annotations

import sys
import timeit

from multidict import CIMultiDict, CIMultiDictProxy

from sentry.proxy.framing import frame_upstream
from sentry.proxy.headers import ClientAddress, upstream_headers
from sentry.proxy.leanclient import _request_bytes

RAW = (
    (b"Host", b"gateway.example:443"),
    (b"Authorization", b"Basic dXNlcjAwMDAwMTpzZWNyZXQ="),
    (b"MS-ASProtocolVersion", b"16.1"),
    (b"User-Agent", b"Apple-iPhone15C2/2104.1"),
    (b"X-MS-PolicyKey", b"1234567890"),
    (b"Content-Type", b"application/vnd.ms-sync.wbxml"),
    (b"Content-Length", b"120"),
    (b"Accept-Encoding", b"gzip"),
)
BODY = b"\x03\x01j\x00" + bytes(116)
TARGET = "/Microsoft-Server-ActiveSync?Cmd=Sync&User=user000001&DeviceId=D1&DeviceType=iPhone"
ADDRESSES = ClientAddress([])


def decoded() -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(
        CIMultiDict([(k.decode("ascii"), v.decode("utf-8", "surrogateescape")) for k, v in RAW])
    )


def forwarded() -> bytes:
    headers = decoded()
    chain = ADDRESSES.chain("192.0.2.7", headers.get("X-Forwarded-For"))
    upstream = upstream_headers(headers, chain, "https")
    body = frame_upstream(upstream, BODY)
    assert isinstance(body, bytes)
    return _request_bytes("POST", TARGET, "backend.example:443", upstream, body)


def main(rounds: int) -> None:
    times = {
        f.__name__: min(timeit.repeat(f, number=rounds, repeat=5)) / rounds
        for f in (decoded, forwarded)
    }
    base, whole = times["decoded"], times["forwarded"]
    print(f"a Sync's headers, best of 5 x {rounds:,}\n")
    print("| step | µs | ratio |")
    print("| --- | ---: | ---: |")
    print(f"| decoded into the request's multidict (baseline) | {base * 1e6:.2f} | 1.00 |")
    print(f"| decoded, filtered, framed and written for the backend | {whole * 1e6:.2f} "
          f"| {whole / base:.2f} |")  # fmt: skip
    print(f"| of it the upstream leg's part | {(whole - base) * 1e6:.2f} | |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50_000)
