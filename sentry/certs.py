"""TLS material: self-signed certificates and a small test CA, made with ``cryptography``.

The gateway's device listener needs a certificate for its FQDN. When the
configured files are missing, ``ensure_certificate`` makes a self-signed one on
first start; ``sentry certs init`` regenerates it, and ``--ca`` makes a small CA
plus a server certificate signed by it (for clients that must trust a root).
Private keys are written with mode 0600. Everything returns PEM bytes; writing
files is a separate, explicit step.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CertPair",
    "ensure_certificate",
    "make_ca",
    "make_self_signed",
    "make_signed",
    "server_ssl_context",
    "write_pair",
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


def write_pair(pair: CertPair, cert_path: Path, key_path: Path) -> None:
    """Write the pair; the key file is created with mode 0600."""
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(pair.cert_pem)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pair.key_pem)
    os.chmod(key_path, 0o600)


def ensure_certificate(cert_path: Path, key_path: Path, fqdn: str) -> bool:
    """Make a self-signed pair for ``fqdn`` unless both files exist.

    Returns True when it generated new files.
    """
    if cert_path.exists() and key_path.exists():
        return False
    write_pair(make_self_signed(fqdn), cert_path, key_path)
    return True


def server_ssl_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """A TLS server context (TLS 1.2+) loaded from PEM files."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_path, key_path)
    return ctx
