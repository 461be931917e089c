"""One set of TLS session ticket keys for every worker (sentry/tlstickets.py)."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest

from sentry import tlstickets
from sentry.certs import ensure_certificate, server_ssl_context
from sentry.worker import WorkerSpec


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cert")
    pair = root / "sentry.pem", root / "sentry.key"
    ensure_certificate(*pair, "localhost")
    return pair


def _server(cert: tuple[Path, Path]) -> ssl.SSLContext:
    return server_ssl_context(*cert)


CLIENT = ssl.create_default_context()
CLIENT.check_hostname, CLIENT.verify_mode = False, ssl.CERT_NONE


def _handshake(
    server: ssl.SSLContext, session: ssl.SSLSession | None = None
) -> tuple[ssl.SSLSession | None, bool]:
    """A TLS 1.3 connection over memory: the client's session (with the
    server's ticket) and whether it resumed ``session``."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = CLIENT.wrap_bio(c_in, c_out, server_hostname="localhost", session=session)
    serving = server.wrap_bio(s_in, s_out, server_side=True)
    done = [False, False]
    for _ in range(10):
        for i, end in enumerate((client, serving)):
            if not done[i]:
                try:
                    end.do_handshake()
                    done[i] = True
                except ssl.SSLWantReadError:
                    pass
            s_in.write(c_out.read())
            c_in.write(s_out.read())
        if all(done):
            break
    serving.write(b"x")  # the tickets come after the handshake, with the data
    c_in.write(s_out.read())
    assert client.read(1) == b"x"
    return client.session, client.session_reused


def test_a_ticket_from_one_context_resumes_on_another_with_the_same_keys(
    cert: tuple[Path, Path],
) -> None:
    keys = tlstickets.new_keys()
    first, second = _server(cert), _server(cert)
    for ctx in (first, second):
        tlstickets.install(ctx, keys)
    session, resumed = _handshake(first)
    assert not resumed
    assert _handshake(second, session)[1]


def test_without_shared_keys_a_ticket_resumes_only_where_it_was_issued(
    cert: tuple[Path, Path],
) -> None:
    first, second = _server(cert), _server(cert)
    session, _ = _handshake(first)
    assert _handshake(first, session)[1]
    assert not _handshake(second, session)[1]


def test_nothing_is_written_when_the_context_is_not_the_expected_one(
    cert: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    target, other = _server(cert), _server(cert)
    other.options |= ssl.OP_NO_TICKET  # another layout would not show these options
    pointer = tlstickets._ssl_ctx(other)
    monkeypatch.setattr(tlstickets, "_ssl_ctx", lambda ctx: pointer)
    keys = tlstickets.new_keys()
    with pytest.raises(tlstickets.TicketKeysUnavailable, match="layout"):
        tlstickets.install(target, keys)
    monkeypatch.undo()
    # the keys went nowhere: a context that has them cannot resume target's tickets
    shared = _server(cert)
    tlstickets.install(shared, keys)
    session, _ = _handshake(target)
    assert not _handshake(shared, session)[1]


def test_keys_are_eighty_bytes(cert: tuple[Path, Path]) -> None:
    with pytest.raises(ValueError, match="80 bytes"):
        tlstickets.install(_server(cert), b"short")


def _spec(fd: int) -> WorkerSpec:
    return WorkerSpec(1, 2, -1, -1, -1, -1, "/nonexistent", ticket_keys_fd=fd)


def test_a_worker_reads_its_keys_once_and_closes_the_pipe() -> None:
    keys = tlstickets.new_keys()
    r, w = os.pipe()
    os.write(w, keys)
    os.close(w)
    spec = _spec(r)
    assert spec.ticket_keys == keys == spec.ticket_keys
    with pytest.raises(OSError):
        os.fstat(r)  # closed
    assert _spec(-1).ticket_keys is None


def test_a_short_key_pipe_gives_no_keys() -> None:
    r, w = os.pipe()
    os.write(w, b"x" * 40)
    os.close(w)
    assert _spec(r).ticket_keys is None
