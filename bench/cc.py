"""Building the bench's C programs (``bench/phones.c``, ``bench/mailhost.c``)
with the machine's C compiler into a run's folder.

Approach. They are small single-file programs, built at the start of the run
that uses them (``cc -O2``), so a clone needs no build step and a bench
always runs the source it was given. Debian: ``gcc``, and ``libssl-dev`` for
the ones that link OpenSSL; ``.ci/run`` installs both when missing.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from bench.proc import BenchError

__all__ = ["available", "build"]


def available(*, openssl: bool = False) -> str | None:
    """Why ``build`` cannot work here, or None when a compiler (and, with
    ``openssl``, OpenSSL's headers) is found."""
    if shutil.which("cc") is None:
        return "no C compiler (apt-get install gcc)"
    if openssl and not Path("/usr/include/openssl/ssl.h").exists():
        return "no OpenSSL headers (apt-get install libssl-dev)"
    return None


def build(source: Path, work: Path, *, libs: tuple[str, ...] = ()) -> Path:
    """Compile ``source`` into ``work`` (the binary is named after it); its path."""
    work.mkdir(parents=True, exist_ok=True)
    binary = work / source.stem
    argv = ["cc", "-O2", "-Wall", "-o", str(binary), str(source), *libs]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        why = available(openssl="-lssl" in libs) or "cc failed"
        raise BenchError(f"could not build {source.name} ({why}):\n{done.stderr[-2000:]}")
    return binary
