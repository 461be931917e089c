"""The server side of a TLS handshake in OpenSSL, full and resumed.

Run: ``.venv/bin/python bench/bench_handshake.py [handshakes]``. A client and
a server ``ssl.SSLObject`` talk over memory BIOs in one process, so only
OpenSSL's work (and ``ssl``'s calls into it) is timed, never a socket. The
server uses the gateway's context (``sentry.certs.server_ssl_context``, the
ECDSA certificate it generates); the time is the server's ``do_handshake``
calls alone. Side by side in one run: a full handshake (the baseline), one
resumed from a session ticket (TLS 1.3 still makes an X25519 exchange), and
both again with one ticket per connection instead of OpenSSL's two (what a
storm could save on tickets; the gateway keeps two: a phone opening a Sync
beside its Ping wants one for each connection).
"""

from __future__ import annotations

import contextlib
import ssl
import sys
import tempfile
import time
from pathlib import Path

from sentry.certs import ensure_certificate, server_ssl_context


def _handshake(
    server: ssl.SSLContext, client: ssl.SSLContext, session: ssl.SSLSession | None
) -> tuple[ssl.SSLObject, float]:
    """One handshake; the client's object (its tickets read) and the server's seconds."""
    si, so, ci, co = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    s = server.wrap_bio(si, so, server_side=True)
    c = client.wrap_bio(ci, co, session=session)
    spent, client_done, server_done = 0.0, False, False
    while not (client_done and server_done):
        try:
            c.do_handshake()
            client_done = True
        except ssl.SSLWantReadError:
            pass
        si.write(co.read())
        t0 = time.perf_counter()
        try:
            s.do_handshake()
            server_done = True
        except ssl.SSLWantReadError:
            pass
        spent += time.perf_counter() - t0
        ci.write(so.read())
    with contextlib.suppress(ssl.SSLWantReadError):
        c.read(1)  # the session tickets, sent after the handshake
    return c, spent


def _per_handshake(tickets: int, resume: bool, count: int, folder: Path) -> float:
    server = server_ssl_context(folder / "cert.pem", folder / "key.pem")
    server.num_tickets = tickets
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    first, _ = _handshake(server, client, None)
    session = first.session if resume else None
    total = 0.0
    for _ in range(count):
        c, spent = _handshake(server, client, session)
        if resume and not c.session_reused:
            raise SystemExit("a handshake offered a ticket and was not resumed")
        total += spent
    return total / count


def main(count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ensure_certificate(folder / "cert.pem", folder / "key.pem", "gateway.bench")
        cases = [(2, False), (2, True), (1, False), (1, True)]
        best = {case: min(_per_handshake(*case, count, folder) for _ in range(3)) for case in cases}
    base = best[(2, False)]
    print(f"the server's side of a TLS handshake, in-process, best of 3 x {count:,}\n")
    print("| tickets per connection | handshake | server µs | ratio |")
    print("| ---: | --- | ---: | ---: |")
    for (tickets, resume), seconds in best.items():
        kind = "resumed" if resume else "full"
        print(f"| {tickets} | {kind} | {seconds * 1e6:.0f} | {seconds / base:.2f} |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
