"""TLS material: make certificates, keys and CSRs; write them without destroying any.

Approach. Everything that *makes* material returns PEM bytes (``CertPair``,
``make_csr``); writing is a separate, explicit step (``write_pair``,
``write_private``) that never replaces an existing file unless told to
(``overwrite=True``), writes through a temporary file and a rename so a crash
never leaves half a PEM, and creates private keys with mode 0600.

On first start the gateway makes a self-signed pair when *neither* file
exists (``ensure_certificate``); when only one exists that is a mistake to
report (``CertFileError`` naming the missing file), never a reason to replace
the other. ``load_pair`` reads both files and checks that the key belongs to
the certificate; ``cert_warnings`` says what an operator should know but that
does not stop the gateway (the names do not cover the FQDN, expiry).
``sentry certs init`` makes a self-signed pair or a small test CA;
``sentry certs csr`` a key and a certificate signing request for a real CA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CertFileError",
    "CertPair",
    "LoadedPair",
    "cert_warnings",
    "certificate_names",
    "ensure_certificate",
    "load_pair",
    "make_ca",
    "make_csr",
    "make_self_signed",
    "make_signed",
    "name_matches",
    "server_ssl_context",
    "write_file",
    "write_pair",
    "write_private",
]

_VALIDITY = dt.timedelta(days=825)


@dataclass(frozen=True, slots=True)
class CertPair:
    """A certificate and its private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _builder(
    subject: str, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
    )


def _server_names(fqdn: str) -> list[str]:
    return list(dict.fromkeys([fqdn, "localhost", "127.0.0.1", "::1"]))


def make_self_signed(fqdn: str) -> CertPair:
    """A self-signed server certificate for ``fqdn`` (plus localhost/loopback)."""
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, fqdn)])
    cert = (
        _builder(fqdn, name, key.public_key())
        .add_extension(_san(_server_names(fqdn)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def make_ca(name: str = "Sentry test CA") -> CertPair:
    """A small CA certificate (for tests and labs, not production)."""
    key = _new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        _builder(name, subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return CertPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def make_signed(fqdn: str, ca: CertPair) -> CertPair:
    """A server certificate for ``fqdn`` signed by ``ca``."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key must be an EC key made by make_ca")
    key = _new_key()
    cert = (
        _builder(fqdn, ca_cert.subject, key.public_key())
        .add_extension(_san(_server_names(fqdn)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return CertPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def make_csr(
    fqdn: str, extra_names: tuple[str, ...] = (), key_pem: bytes | None = None
) -> CertPair:
    """A certificate signing request for ``fqdn`` (and ``extra_names``) and its key.

    With ``key_pem`` the request is signed by that existing key (returned
    unchanged); otherwise a new key is made. ``cert_pem`` holds the CSR."""
    key = _new_key() if key_pem is None else _private_key(key_pem)
    names = list(dict.fromkeys([fqdn, *extra_names]))
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, fqdn)]))
        .add_extension(_san(names), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertPair(csr.public_bytes(serialization.Encoding.PEM), key_pem or _key_pem(key))


def _private_key(key_pem: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("only EC keys are supported for a CSR")
    return key


# --- Writing: never over an existing file unless told ---


def write_file(path: Path, data: bytes, mode: int, *, overwrite: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory.

    Without ``overwrite`` the final step is ``os.link``, which fails when
    ``path`` exists (``FileExistsError``), so nothing is ever replaced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def write_private(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    """Write a secret (a private key) with mode 0600; ``FileExistsError`` when
    ``path`` exists and ``overwrite`` is false."""
    write_file(path, data, 0o600, overwrite=overwrite)


def write_pair(pair: CertPair, cert_path: Path, key_path: Path, *, overwrite: bool = False) -> None:
    """Write the pair (key mode 0600, certificate 0644). Without ``overwrite``
    neither file may exist (``FileExistsError`` before anything is written)."""
    if not overwrite:
        for path in (cert_path, key_path):
            if os.path.lexists(path):
                raise FileExistsError(f"{path} exists")
    write_private(key_path, pair.key_pem, overwrite=overwrite)
    write_file(cert_path, pair.cert_pem, 0o644, overwrite=overwrite)


# --- Reading and checking what is on disk ---


class CertFileError(Exception):
    """A certificate or key file is missing, unreadable or unusable.

    ``role`` is ``"cert"`` or ``"key"`` (the caller maps it to a setting),
    ``path`` the file, ``problem`` what is wrong."""

    def __init__(self, role: Literal["cert", "key"], path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.role = role
        self.path = path
        self.problem = problem


@dataclass(frozen=True, slots=True)
class LoadedPair:
    """A certificate (the first of the file's chain) whose key was checked to match."""

    cert: x509.Certificate
    chain_length: int


def ensure_certificate(cert_path: Path, key_path: Path, fqdn: str) -> bool:
    """Make a self-signed pair for ``fqdn`` when neither file exists; return
    True when it did. One file without the other is a ``CertFileError`` naming
    the missing one: the existing file is never replaced."""
    has_cert, has_key = os.path.lexists(cert_path), os.path.lexists(key_path)
    if has_cert and has_key:
        return False
    if not has_cert and not has_key:
        write_pair(make_self_signed(fqdn), cert_path, key_path)
        return True
    missing, present = (key_path, cert_path) if has_cert else (cert_path, key_path)
    role: Literal["cert", "key"] = "key" if has_cert else "cert"
    raise CertFileError(
        role,
        missing,
        f"missing, but {present} exists (nothing was replaced): restore the file, "
        "or move both away to have a new self-signed pair made",
    )


def _read(role: Literal["cert", "key"], path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CertFileError(role, path, "does not exist") from None
    except IsADirectoryError:
        raise CertFileError(role, path, "is a directory, not a PEM file") from None
    except OSError as exc:
        raise CertFileError(role, path, f"cannot read: {exc.strerror or exc}") from None


def load_pair(cert_path: Path, key_path: Path) -> LoadedPair:
    """Read and parse both files and check that the key belongs to the certificate."""
    try:
        chain = x509.load_pem_x509_certificates(_read("cert", cert_path))
    except ValueError:
        raise CertFileError("cert", cert_path, "not a PEM certificate") from None
    key_pem = _read("key", key_path)
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise CertFileError(
            "key", key_path, "is encrypted (a passphrase is not supported)"
        ) from None
    except ValueError:
        raise CertFileError("key", key_path, "not a PEM private key") from None
    if _public(key.public_key()) != _public(chain[0].public_key()):
        raise CertFileError("key", key_path, f"does not belong to the certificate {cert_path}")
    return LoadedPair(chain[0], len(chain))


def _public(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def certificate_names(cert: x509.Certificate) -> list[str]:
    """The names a certificate is valid for: its SAN DNS names and IP
    addresses, or its common name when it has no SAN extension."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return [str(a.value) for a in cns]
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return [*san.get_values_for_type(x509.DNSName), *ips]


def name_matches(fqdn: str, names: list[str]) -> bool:
    """Whether ``fqdn`` is covered by ``names`` (one ``*.`` wildcard label allowed)."""
    want = fqdn.rstrip(".").lower()
    for name in (n.rstrip(".").lower() for n in names):
        if name == want:
            return True
        if name.startswith("*.") and "." in want and want.split(".", 1)[1] == name[2:]:
            return True
    return False


def cert_warnings(cert: x509.Certificate, fqdn: str, now: dt.datetime) -> list[str]:
    """What an operator should fix that does not stop the gateway."""
    out = []
    names = certificate_names(cert)
    if not name_matches(fqdn, names):
        shown = ", ".join(names) or "none"
        out.append(f"the certificate's names ({shown}) do not include gateway.fqdn {fqdn!r}")
    if now > cert.not_valid_after_utc:
        out.append(f"the certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    elif now < cert.not_valid_before_utc:
        out.append(f"the certificate is not valid before {cert.not_valid_before_utc:%Y-%m-%d}")
    return out


def server_ssl_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """A TLS server context (TLS 1.2+) loaded from PEM files. Renegotiation
    is refused (a client asking for handshake after handshake on one TLS 1.2
    connection makes the server pay for each: OpenSSL 3 refuses a client's
    by default, older builds do not)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    ctx.load_cert_chain(cert_path, key_path)
    return ctx
