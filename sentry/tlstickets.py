"""One set of TLS session ticket keys for every worker of a node.

Approach. A phone that reconnects offers the session ticket its last
connection got, and a server that can decrypt it skips the full handshake
(no key exchange signature, no certificate: measured 0.38-0.40 ms of the
gateway's CPU against 0.5 ms for a full one). OpenSSL encrypts tickets with
keys each ``SSL_CTX`` makes at random, so under ``gateway.workers`` every
worker had its own: the kernel hands a reconnecting phone to any worker, and
with two workers only half the phones that offered a ticket were resumed
(5,073 of 10,000 in a storm). The supervisor now makes one set of keys
(``new_keys``: 80 random bytes, OpenSSL's ticket key name, HMAC key and AES
key) and hands it to each worker on an inherited pipe (``sentry.worker``:
never in the environment, never on disk); each worker installs it in its
listeners' contexts (``install``) before serving. A restarted worker gets the
same keys, so the tickets its predecessor issued still resume. The keys live
as long as the supervisor, as OpenSSL's own lived as long as a process.

Python's ``ssl`` has no call for it, so ``install`` calls OpenSSL's
``SSL_CTX_ctrl(ctx, SSL_CTRL_SET_TLSEXT_TICKET_KEYS, 80, keys)`` through
ctypes, on the ``SSL_CTX`` a CPython ``SSLContext`` holds as its first field,
in the very libssl this process loaded for ``ssl`` (found in
``/proc/self/maps``, so never another build's). It checks before it writes:
the library's version must be the one ``ssl`` reports and the pointer's
``SSL_CTX_get_options`` must equal the context's ``options``; it reads the
keys back after. When any check fails (another platform, another Python),
nothing is written and the worker keeps its own keys: resumption works as
before, on the worker that issued the ticket.
"""

from __future__ import annotations

import ctypes
import functools
import os
import ssl
from pathlib import Path

__all__ = ["KEY_BYTES", "TicketKeysUnavailable", "install", "new_keys"]

KEY_BYTES = 80
"""OpenSSL 1.1+'s ticket keys: a 16-byte name, a 32-byte HMAC key, a 32-byte AES key."""

_SET_KEYS = 59  # SSL_CTRL_SET_TLSEXT_TICKET_KEYS
_GET_KEYS = 58  # SSL_CTRL_GET_TLSEXT_TICKET_KEYS


class TicketKeysUnavailable(Exception):
    """The keys cannot be installed here (the reason is the message)."""


def new_keys() -> bytes:
    return os.urandom(KEY_BYTES)


def _libssl_path() -> str:
    """The libssl this process mapped for ``ssl``."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError as exc:
        raise TicketKeysUnavailable(f"no /proc/self/maps ({exc.strerror})") from None
    paths = {line.split()[-1] for line in maps.splitlines() if "/libssl" in line}
    if len(paths) != 1:
        raise TicketKeysUnavailable(f"{len(paths)} libssl mappings")
    return paths.pop()


@functools.cache
def _libssl() -> ctypes.CDLL:
    """The mapped libssl with the three calls typed (loaded once)."""
    lib = ctypes.CDLL(_libssl_path())
    lib.OpenSSL_version_num.restype = ctypes.c_ulong
    lib.OpenSSL_version_num.argtypes = []
    if lib.OpenSSL_version_num() != ssl.OPENSSL_VERSION_NUMBER:
        raise TicketKeysUnavailable("the mapped libssl is not the one ssl reports")
    lib.SSL_CTX_get_options.restype = ctypes.c_uint64
    lib.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
    lib.SSL_CTX_ctrl.restype = ctypes.c_long
    lib.SSL_CTX_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    return lib


def _ssl_ctx(ctx: ssl.SSLContext) -> int:
    """The ``SSL_CTX *`` of a CPython ``SSLContext`` (its first field)."""
    pointer = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    if not pointer:
        raise TicketKeysUnavailable("no SSL_CTX in the context")
    return pointer


def install(ctx: ssl.SSLContext, keys: bytes) -> None:
    """Make ``ctx`` issue and accept tickets under ``keys``; raises
    ``TicketKeysUnavailable`` (having written nothing) where it cannot."""
    if len(keys) != KEY_BYTES:
        raise ValueError(f"ticket keys are {KEY_BYTES} bytes, not {len(keys)}")
    try:
        lib = _libssl()
    except OSError as exc:
        raise TicketKeysUnavailable(f"libssl cannot be loaded: {exc}") from None
    pointer = _ssl_ctx(ctx)
    if lib.SSL_CTX_get_options(pointer) != ctx.options:
        raise TicketKeysUnavailable("the context's layout is not the expected one")
    if lib.SSL_CTX_ctrl(pointer, _SET_KEYS, KEY_BYTES, ctypes.create_string_buffer(keys)) != 1:
        raise TicketKeysUnavailable("OpenSSL refused the keys")
    back = ctypes.create_string_buffer(KEY_BYTES)
    if lib.SSL_CTX_ctrl(pointer, _GET_KEYS, KEY_BYTES, back) != 1 or back.raw != keys:
        raise TicketKeysUnavailable("OpenSSL did not keep the keys")
