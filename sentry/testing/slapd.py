"""A real OpenLDAP ``slapd`` for tests and bench/: its own config, data and TLS in a directory.

Approach. ``start_slapd(workdir)`` writes a ``slapd.conf`` (schemas core,
cosine, inetorgperson and ``SCHEMA``: AD's ``extensionAttribute1/2``,
``proxyAddresses`` and ``userPrincipalName`` on an auxiliary class), a test
CA and a server certificate for ``localhost``/127.0.0.1 (``sentry.certs``),
loads the seed LDIF with ``slapadd`` (offline: 10,000 entries in seconds),
then runs ``slapd -d none`` in the foreground listening on a unix socket
(``ldapi_url``) and on two loopback TCP ports (``ldap_url`` for StartTLS,
``ldaps_url``). Ports are picked at random and the start is *watched*: slapd
prints ``slapd starting`` once every listener is bound, or ``bind(...)
failed errno=98`` when a port is taken, and then exits; the latter is
retried with new ports (the former is followed by connecting to each
listener until it accepts: slapd calls listen() just after). No port is
bound and released beforehand, so there is no window for another process to
take it.

The server enforces a size limit of ``SIZE_LIMIT`` entries on a plain
search but none on a paged one, as Active Directory's MaxPageSize does: a
client that does not page cannot read more. The service account
``bind_dn``/``password`` may read everything; anonymous binds read nothing.
``stop()`` ends the server (its data stays), ``restart()`` starts it again
on the same addresses. ``modify``/``add``/``delete`` change entries as the
directory manager, through the unix socket (blocking: call them in a thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import ldap3

from sentry.aio import create_task
from sentry.certs import make_ca, make_signed

__all__ = [
    "SCHEMA",
    "SIZE_LIMIT",
    "Slapd",
    "SlapdError",
    "person_ldif",
    "slapd_binary",
    "start_slapd",
]

SCHEMA = """\
# Test schema: the Active Directory attributes a directory sync maps (AD's OIDs).
attributetype ( 1.2.840.113556.1.2.423 NAME 'extensionAttribute1'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15{1024} SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.2.424 NAME 'extensionAttribute2'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15{1024} SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.2.210 NAME 'proxyAddresses'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15{1123} )
attributetype ( 1.2.840.113556.1.4.656 NAME 'userPrincipalName'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.99999.1.1 NAME 'sentryTestUser' SUP top AUXILIARY
  MAY ( extensionAttribute1 $ extensionAttribute2 $ proxyAddresses $ userPrincipalName ) )
"""
SIZE_LIMIT = 5
"""Entries a plain (not paged) search may return."""
SUFFIX = "dc=example,dc=com"
PEOPLE = f"ou=people,{SUFFIX}"
_ROOT_DN, _ROOT_PW = f"cn=admin,{SUFFIX}", "admin-secret"
_MODULES = ("/usr/lib/ldap", "/usr/lib64/openldap", "/usr/lib/openldap")
_SCHEMAS = ("/etc/ldap/schema", "/etc/openldap/schema")


class SlapdError(RuntimeError):
    """slapd could not be started (the message carries its output)."""


def slapd_binary() -> str | None:
    """The slapd executable, or None when OpenLDAP's server is not installed."""
    for name in ("slapd", "/usr/sbin/slapd", "/usr/local/sbin/slapd"):
        found = shutil.which(name)
        if found:
            return found
    return None


def person_ldif(
    uid: str,
    *,
    upn: str | None = None,
    mail: str | None = None,
    display: str | None = None,
    proxies: Sequence[str] = (),
    ext1: str | None = None,
    ext2: str | None = None,
) -> str:
    """One person entry under ``ou=people`` (LDIF, ending with a blank line)."""
    lines = [
        f"dn: uid={uid},{PEOPLE}",
        "objectClass: inetOrgPerson",
        "objectClass: sentryTestUser",
        f"uid: {uid}",
        f"cn: {display or uid}",
        f"sn: {uid}",
    ]
    values = {"userPrincipalName": upn, "mail": mail, "displayName": display}
    values |= {"extensionAttribute1": ext1, "extensionAttribute2": ext2}
    lines += [f"{k}: {v}" for k, v in values.items() if v is not None]
    lines += [f"proxyAddresses: {p}" for p in proxies]
    return "\n".join(lines) + "\n\n"


_BASE_LDIF = f"""\
dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: {PEOPLE}
objectClass: organizationalUnit
ou: people

"""


@dataclass
class Slapd:
    """A running slapd (see the module comment)."""

    workdir: Path
    ldapi_path: Path
    port: int = 0
    tls_port: int = 0
    bind_dn: str = f"cn=sentry,{SUFFIX}"
    password: str = "sync-secret"
    base_dn: str = PEOPLE
    ca_file: Path = field(default_factory=Path)
    _process: asyncio.subprocess.Process | None = None
    _drain: asyncio.Task[None] | None = None
    output: list[str] = field(default_factory=list)

    @property
    def ldapi_url(self) -> str:
        return "ldapi://" + quote(str(self.ldapi_path), safe="")

    @property
    def ldap_url(self) -> str:
        return f"ldap://localhost:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://localhost:{self.tls_port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def stop(self) -> None:
        """End the server (SIGTERM, then SIGKILL after 10 s); its data stays."""
        proc, self._process = self._process, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        if self._drain is not None:
            await self._drain

    async def restart(self) -> None:
        """Start again on the same socket and ports."""
        await self.stop()
        if not await self._launch(self.port, self.tls_port):
            raise SlapdError(f"port {self.port} or {self.tls_port} was taken while stopped")

    async def _launch(self, port: int, tls_port: int) -> bool:
        """Start slapd; True when it is serving, False when a port was taken."""
        with contextlib.suppress(FileNotFoundError):
            self.ldapi_path.unlink()
        urls = f"ldap://127.0.0.1:{port}/ ldaps://127.0.0.1:{tls_port}/ {self.ldapi_url}"
        binary = slapd_binary() or "slapd"
        conf = str(self.workdir / "slapd.conf")
        proc = await asyncio.create_subprocess_exec(
            binary, "-f", conf, "-h", urls, "-d", "none",
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert proc.stderr is not None
        lines: list[str] = []
        while True:
            raw = await asyncio.wait_for(proc.stderr.readline(), 30)
            if not raw:  # exited
                await proc.wait()
                if any("errno=98" in line for line in lines):
                    return False
                raise SlapdError("slapd did not start:\n" + "\n".join(lines[-20:]))
            line = raw.decode(errors="replace").rstrip()
            lines.append(line)
            if line.endswith("slapd starting"):
                break
        self._process, self.port, self.tls_port = proc, port, tls_port
        self.output = lines
        self._drain = create_task(_drain(proc.stderr, self.output), name="slapd:stderr")
        await self._listening()
        return True

    async def _listening(self, timeout: float = 10.0) -> None:
        """Until every listener accepts: slapd binds them before it says
        "slapd starting" but calls listen() just after (they are ours: bound)."""
        async with asyncio.timeout(timeout):
            for target in (str(self.ldapi_path), self.port, self.tls_port):
                while not await _accepts(target):
                    await asyncio.sleep(0.01)

    # --- changing entries (blocking; the directory manager over the unix socket) ---

    def _manager(self) -> Any:  # ldap3's stubs leave add/modify/delete untyped
        server = ldap3.Server(self.ldapi_url, get_info=ldap3.NONE)
        return ldap3.Connection(server, _ROOT_DN, _ROOT_PW, auto_bind=True, raise_exceptions=True)

    def modify(self, uid: str, changes: Mapping[str, Sequence[str] | None]) -> None:
        """Replace attributes of ``uid`` (None or []: delete the attribute)."""
        conn = self._manager()
        try:
            wanted = {k: [(ldap3.MODIFY_REPLACE, list(v or []))] for k, v in changes.items()}
            conn.modify(f"uid={uid},{PEOPLE}", wanted)
        finally:
            conn.unbind()

    def delete(self, uid: str) -> None:
        conn = self._manager()
        try:
            conn.delete(f"uid={uid},{PEOPLE}")
        finally:
            conn.unbind()

    def add_ldif(self, ldif: str) -> None:
        """Add the entries of ``ldif`` (``person_ldif`` blocks)."""
        conn = self._manager()
        try:
            for block in filter(None, (b.strip() for b in ldif.split("\n\n"))):
                dn, attrs = _parse_block(block)
                conn.add(dn, attributes=attrs)
        finally:
            conn.unbind()


async def _accepts(target: str | int) -> bool:
    """Whether a unix socket path or a loopback port accepts a connection now."""
    try:
        if isinstance(target, str):
            _, writer = await asyncio.open_unix_connection(target)
        else:
            _, writer = await asyncio.open_connection("127.0.0.1", target)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


async def _drain(stream: asyncio.StreamReader, into: list[str]) -> None:
    while raw := await stream.readline():
        if len(into) < 1000:
            into.append(raw.decode(errors="replace").rstrip())


def _parse_block(block: str) -> tuple[str, dict[str, list[str]]]:
    dn, attrs = "", dict[str, list[str]]()
    for line in block.splitlines():
        name, _, value = line.partition(": ")
        if name == "dn":
            dn = value
        else:
            attrs.setdefault(name, []).append(value)
    return dn, attrs


def _first_dir(candidates: Iterable[str]) -> str:
    for c in candidates:
        if Path(c).is_dir():
            return c
    raise SlapdError(f"none of {', '.join(candidates)} exists (is slapd installed?)")


def _config(workdir: Path, s: Slapd) -> str:
    schemas = _first_dir(_SCHEMAS)
    includes = [f"include {schemas}/{n}.schema" for n in ("core", "cosine", "inetorgperson")]
    return "\n".join(
        [
            *includes,
            f"include {workdir}/sentry-test.schema",
            f"pidfile {workdir}/slapd.pid",
            f"modulepath {_first_dir(_MODULES)}",
            "moduleload back_mdb",
            f"TLSCACertificateFile {workdir}/ca.pem",
            f"TLSCertificateFile {workdir}/server.pem",
            f"TLSCertificateKeyFile {workdir}/server.key",
            f"sizelimit size.soft={SIZE_LIMIT} size.hard={SIZE_LIMIT} size.prtotal=unlimited",
            "database mdb",
            "maxsize 1073741824",
            f'suffix "{SUFFIX}"',
            f'rootdn "{_ROOT_DN}"',
            f"rootpw {_ROOT_PW}",
            f"directory {workdir}/data",
            "index objectClass eq",
            "access to attrs=userPassword by anonymous auth by * none",
            "access to * by users read by * none",
            "",
        ]
    )


async def start_slapd(workdir: Path, people: str = "", *, attempts: int = 20) -> Slapd:
    """Write the configuration, load ``people`` (LDIF of ``person_ldif`` blocks)
    with the base entries and the service account, and start slapd."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "data").mkdir(exist_ok=True)
    s = Slapd(workdir, workdir / "ldapi", ca_file=workdir / "ca.pem")
    ca = make_ca("Sentry slapd test CA")
    server = make_signed("localhost", ca)
    (workdir / "ca.pem").write_bytes(ca.cert_pem)
    (workdir / "server.pem").write_bytes(server.cert_pem)
    (workdir / "server.key").write_bytes(server.key_pem)
    os.chmod(workdir / "server.key", 0o600)
    (workdir / "sentry-test.schema").write_text(SCHEMA)
    (workdir / "slapd.conf").write_text(_config(workdir, s))
    service = (
        f"dn: {s.bind_dn}\nobjectClass: person\nobjectClass: simpleSecurityObject\n"
        f"cn: sentry\nsn: sentry\nuserPassword: {s.password}\n\n"
    )
    await _slapadd(workdir, _BASE_LDIF + service + people)
    for _ in range(attempts):
        port, tls_port = random.sample(range(20000, 61000), 2)
        if await s._launch(port, tls_port):
            return s
    raise SlapdError(f"no free pair of ports in {attempts} attempts")


async def _slapadd(workdir: Path, ldif: str) -> None:
    binary = shutil.which("slapadd") or "/usr/sbin/slapadd"
    (workdir / "seed.ldif").write_text(ldif)
    proc = await asyncio.create_subprocess_exec(
        binary, "-q", "-f", str(workdir / "slapd.conf"), "-l", str(workdir / "seed.ldif"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise SlapdError(f"slapadd failed: {out.decode(errors='replace')[-2000:]}")
