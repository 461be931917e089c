"""The device listener's TLS: one small protocol per connection over OpenSSL's memory BIOs.

Approach. asyncio's ``SSLProtocol`` serves any application protocol with
every feature a TLS transport may need (buffered protocols, renegotiation
during a handshake, flow control in both layers, a lingering shutdown with
its own clock) and keeps, per connection, an attribute dict of some forty
fields, a second transport object, a read buffer and their bookkeeping:
about 5.6 KiB more than this module's protocol per idle connection
(``bench/bench_tlsconn.py``), and every device holds its Ping open on one.
The device listener's own HTTP/1.1 server (``h1server.DeviceConnection``)
needs little of it, so ``TlsConnection`` does exactly that, in the sans-I/O
style of the rest of the listener: the socket's bytes go into an
``ssl.MemoryBIO``, ``ssl.SSLObject`` turns them into plain text (and the
answers back into records), and what OpenSSL wants sent is written to the
socket after each step. It is the inner protocol's transport
(``write``, ``close``, ``abort``, ``pause_reading``/``resume_reading``,
``is_closing``, ``get_extra_info``), and the socket transport's protocol
(``pause_writing``/``resume_writing`` are passed on, so the guard's send
clock sees a device that stops reading).

* The handshake has the header timeout as its clock (as ``SSLProtocol`` was
  given): a client that connects and sends nothing, or too little, is cut
  off and counted (``sentry_connection_timeouts_total{phase="handshake"}``).
  A failed handshake (plain HTTP on the TLS port, no shared cipher) is
  counted as ``sentry_bad_requests_total{kind="tls:handshake"}`` and logged
  at most once per interval; OpenSSL's alert is sent and the socket closed.
  The inner protocol sees nothing of a connection whose handshake did not
  complete (no ``connection_made``, no ``connection_lost``), as before.
  A record that does not decrypt after the handshake (forged, cut, out of
  order) ends the connection at once and is counted as ``tls:record``.
* Reading: every record that arrives is decrypted at once and handed on;
  while the inner protocol has paused reading, the socket is paused too and
  what has arrived stays encrypted in the memory BIO until it resumes.
* Nothing is kept per idle connection but this object, the ``SSLObject`` and
  two empty BIOs: a read allocates its plain text only while it is handed on.
  The BIOs are fed at most ``CHUNK`` bytes at once, since a memory BIO keeps
  the largest size it ever held.
* Closing: ``close`` sends TLS's ``close_notify``, then closes the socket
  once its buffer is written (the device reads the answer and the end of the
  session); ``abort`` drops the socket. A peer's ``close_notify`` or a TCP
  end of file is the inner protocol's end of file: the connection closes.
* The connection's slot in the gate is given back in ``connection_lost``,
  which asyncio calls for every accepted socket, failed handshakes included.

The admin listener keeps asyncio's ``SSLProtocol`` (aiohttp's protocol uses
more of a transport, and it holds few connections).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .connections import ConnectionGate

__all__ = ["READ_SIZE", "TlsConnection"]

READ_SIZE = 16 * 1024
"""Plain text asked of OpenSSL per read: one TLS record at most. The bytes
object is made for the read and shrunk to what came; none is kept."""

CHUNK = 16 * 1024
"""The most bytes put into a memory BIO at once, either way. OpenSSL's memory
BIO keeps the largest size it ever held for the life of the connection (it
grows, it never shrinks): fed a 256 KiB socket read, or a 64 KiB answer
chunk encrypted in one call, a connection kept for an hour-long Ping after an
upload or a download would keep that much. In pieces of 16 KiB (the socket
read into one buffer shared by every connection; an answer encrypted a piece
at a time and sent in one write), each BIO keeps at most about two records."""

_RECV = bytearray(CHUNK)  # shared: a read is handed on before the next one
_RECV_VIEW = memoryview(_RECV)

_HANDSHAKE, _OPEN, _CLOSING, _CLOSED = 0, 1, 2, 3


class TlsConnection(asyncio.BufferedProtocol):
    """Server-side TLS for one device connection (module comment)."""

    __slots__ = (
        "_app",
        "_app_paused",
        "_connected",
        "_gate",
        "_incoming",
        "_outgoing",
        "_reading",
        "_ssl",
        "_state",
        "_timer",
        "_transport",
    )

    def __init__(
        self, gate: ConnectionGate, app: asyncio.Protocol, context: ssl.SSLContext
    ) -> None:
        self._gate = gate
        self._app = app
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._state = _HANDSHAKE
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._app_paused = False
        self._connected = False  # the inner protocol has had connection_made
        self._reading = False  # inside _read: a resume_reading from the app does not recurse

    # -- the socket's protocol -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._gate.limits.header_timeout, self._handshake_expired)

    def get_buffer(self, sizehint: int) -> memoryview:
        return _RECV_VIEW

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(_RECV_VIEW[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        if self._state >= _CLOSED:
            return
        self._incoming.write(data)
        if self._state == _HANDSHAKE:
            self._handshake()
        elif not self._app_paused:
            self._read()

    def eof_received(self) -> bool:
        if self._state == _OPEN:
            self._app.eof_received()  # the device has gone: the inner protocol ends its request
        return False  # the socket closes; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._state = _CLOSED
        self._cancel_timer()
        self._transport = None
        try:
            if self._connected:
                self._app.connection_lost(exc)
        finally:
            self._gate.release()

    def pause_writing(self) -> None:
        if self._connected:
            self._app.pause_writing()

    def resume_writing(self) -> None:
        if self._connected:
            self._app.resume_writing()

    # -- handshake ----------------------------------------------------------------------

    def _handshake(self) -> None:
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except (ssl.SSLError, ssl.CertificateError, ValueError) as exc:
            self._flush()  # OpenSSL's alert, when it made one
            self._gate.tls_failed(_reason(exc))
            self._state = _CLOSING
            self._close_socket()
            return
        self._flush()  # the handshake's last flight and TLS 1.3's session tickets
        self._cancel_timer()
        self._state = _OPEN
        self._connected = True
        self._app.connection_made(self)  # type: ignore[arg-type]  # a transport to it
        if self._state == _OPEN and not self._app_paused:
            self._read()  # a request that came with the client's Finished

    def _handshake_expired(self) -> None:
        self._timer = None
        if self._state == _HANDSHAKE:
            self._gate.timed_out("handshake")
            self._state = _CLOSING
            if self._transport is not None:
                self._transport.abort()

    # -- reading ------------------------------------------------------------------------

    def _read(self) -> None:
        """Decrypt what has arrived and hand it on, until OpenSSL wants more,
        the inner protocol pauses, or the connection ends."""
        if self._reading:
            return
        self._reading = True
        incoming, tls = self._incoming, self._ssl
        try:
            while self._state == _OPEN and not self._app_paused:
                # OpenSSL can give at most what it holds decrypted and what waits
                # in the BIO (records are longer than their plain text). Neither:
                # the read could only raise SSLWantReadError, an exception with its
                # message built (about 1 µs, once a request's records are read);
                # some: the read asks for that much, not for READ_SIZE and a
                # shrink. Asked for less than a record holds, OpenSSL keeps the
                # rest decrypted (``pending``) for the next turn of this loop.
                size = incoming.pending + tls.pending()
                if not size:
                    break
                try:
                    data = tls.read(min(size, READ_SIZE))
                except ssl.SSLWantReadError:  # a record not yet whole
                    break
                except ssl.SSLZeroReturnError:
                    data = b""
                except ssl.SSLError as exc:  # a broken or forged record: nothing more can be read
                    self._gate.tls_failed(_reason(exc), "tls:record")
                    self.abort()
                    return
                if not data:  # the peer's close_notify: its end of file
                    self._app.eof_received()
                    self.close()
                    break
                self._app.data_received(data)
        finally:
            self._reading = False
        self._flush()  # whatever reading made OpenSSL send (a key update's answer)

    def pause_reading(self) -> None:
        if not self._app_paused:
            self._app_paused = True
            if self._transport is not None and self._state == _OPEN:
                self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._app_paused:
            self._app_paused = False
            if self._transport is not None and self._state == _OPEN:
                self._transport.resume_reading()
                # records that arrived before the pause are still in the BIO
                asyncio.get_running_loop().call_soon(self._resume)

    def _resume(self) -> None:
        if self._state == _OPEN and not self._app_paused:
            self._read()

    def is_reading(self) -> bool:
        return self._state == _OPEN and not self._app_paused

    # -- writing ------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._state != _OPEN or not data:
            return  # closing or closed: what is written now has nowhere to go
        try:
            if len(data) <= CHUNK:
                self._ssl.write(data)
            else:  # a piece at a time, so the outgoing BIO stays small (CHUNK)
                view, pieces = memoryview(data), []
                for start in range(0, len(view), CHUNK):
                    self._ssl.write(view[start : start + CHUNK])
                    pieces.append(self._outgoing.read())
                if self._transport is not None:
                    self._transport.write(b"".join(pieces))
                return
        except ssl.SSLError:
            self.abort()
            return
        self._flush()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def _flush(self) -> None:
        out = self._outgoing.read()
        if out and self._transport is not None:
            self._transport.write(out)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() if self._transport is not None else 0

    def can_write_eof(self) -> bool:
        return False

    # -- closing ------------------------------------------------------------------------

    def is_closing(self) -> bool:
        return self._state != _OPEN or self._transport is None or self._transport.is_closing()

    def close(self) -> None:
        """TLS's close_notify, then the socket, once its buffer is written."""
        if self._state != _OPEN:
            return
        self._state = _CLOSING
        with contextlib.suppress(ssl.SSLError, ValueError):
            self._ssl.unwrap()  # sent; the peer's close_notify is not waited for
        self._flush()
        self._close_socket()

    def abort(self) -> None:
        if self._state >= _CLOSED:
            return
        self._state = _CLOSING
        if self._transport is not None:
            self._transport.abort()

    def _close_socket(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self._ssl
        if name == "sslcontext":
            return self._ssl.context
        if name == "peercert":
            return self._ssl.getpeercert()
        if name == "cipher":
            return self._ssl.cipher()
        if name == "compression":
            return self._ssl.compression()
        if self._transport is None:
            return default
        return self._transport.get_extra_info(name, default)


def _reason(exc: BaseException) -> str:
    """OpenSSL's reason in a few words (``HTTP_REQUEST``, ``NO_SHARED_CIPHER``),
    bounded for a log line."""
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason:
        return reason[:80]
    return type(exc).__name__
