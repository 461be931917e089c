"""A fleet of phones in C (``bench/phones.c``): the storm bench's generator of
phones that resume their TLS sessions.

Approach. A phone's TLS stack keeps the session tickets the server sent it
and offers one when it reconnects; after a blip, a gateway that shares its
ticket keys across workers resumes nearly every phone instead of running a
full handshake (README "TLS"). Neither of the storm's other generators can
show that at scale: the Python ones resume but cost more CPU than the
gateway, and wrk keeps no session across its start. ``phones.c`` holds one
Ping per phone on its own connection and, on ``storm``, drops them all and
reconnects them at once, each phone offering its own last ticket when
``resume`` is on (a full handshake each otherwise, as wrk does).

``build`` compiles it with the machine's C compiler against OpenSSL
(Debian: ``gcc`` and ``libssl-dev``; ``bench/cc.py``) into the run's folder; ``Phones``
writes the requests and starts it through ``bench.proc.start`` (its JSON
lines, its CPU from ``/proc``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import cc
from bench.proc import BenchError, Proc, start
from bench.wrkgen import write_requests

__all__ = ["Phones", "available", "build"]

SOURCE = Path(__file__).with_name("phones.c")


def available() -> str | None:
    """Why ``build`` cannot work here, or None when a compiler and OpenSSL's headers are found."""
    return cc.available(openssl=True)


def build(work: Path) -> Path:
    """Compile ``phones.c`` into ``work``; the binary's path."""
    return cc.build(SOURCE, work, libs=("-lssl", "-lcrypto"))


class Phones:
    """One phone per request, run by ``phones.c`` (see the module comment):
    ``ramp`` opens them at ``rate`` a second and waits until every Ping is
    sent, ``storm`` drops and reopens them all, ``stop`` ends the process
    and returns the last phase's counts."""

    def __init__(
        self,
        host: str,
        port: int,
        requests: list[bytes],
        work: Path,
        *,
        tls: bool,
        resume: bool,
        rate: float,
    ) -> None:
        binary = build(work)
        write_requests(requests, work / "phones")
        argv = [str(binary), host, str(port), str(work / "phones"), repr(float(rate)),
                str(int(tls)), str(int(resume))]  # fmt: skip
        self.proc: Proc = start("phones", argv, work, pipes=True)
        self.count = len(requests)
        ready = self.proc.receive(30)
        if ready.get("phones") != self.count:
            raise BenchError(f"phones read {ready.get('phones')} of {self.count} requests")

    def ramp(self) -> None:
        self.proc.send({"cmd": "ramp"})

    def sent(self, timeout: float) -> dict[str, Any]:
        """The ramp's ``sent`` event: every phone's Ping written."""
        return self._event("sent", timeout)

    def storm(self, timeout: float) -> dict[str, Any]:
        """Drop every connection and open them all again; the ``stormed`` event."""
        self.proc.send({"cmd": "storm"})
        return self._event("stormed", timeout)

    def stop(self, timeout: float = 60.0) -> dict[str, Any]:
        """End the phones (their connections close); the phase's counts."""
        self.proc.send({"cmd": "stop"})
        result = self._event("result", timeout)
        self.proc.popen.wait(timeout)
        self.proc.stop()
        return result

    def _event(self, name: str, timeout: float) -> dict[str, Any]:
        message = self.proc.receive(timeout)
        if message.get("event") != name:
            raise BenchError(f"phones said {message} where {name!r} was expected")
        return message

    def check_alive(self) -> None:
        self.proc.check_alive()

    def cpu(self) -> float:
        """The phones' CPU seconds so far (user and system)."""
        return self.proc.cpu() if self.proc.popen.poll() is None else 0.0

    def kill(self) -> None:
        self.proc.stop()
