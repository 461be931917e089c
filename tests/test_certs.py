"""sentry.certs: nothing is overwritten, every bad file is named, names and CSRs."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sentry.certs import (
    CertFileError,
    cert_warnings,
    certificate_names,
    ensure_certificate,
    load_pair,
    make_ca,
    make_csr,
    make_self_signed,
    make_signed,
    name_matches,
    server_ssl_context,
    write_pair,
    write_private,
)


def _pair(tmp_path: Path, fqdn: str = "gw.example") -> tuple[Path, Path]:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    write_pair(make_self_signed(fqdn), cert, key)
    return cert, key


def test_ensure_makes_a_pair_only_when_neither_file_exists(tmp_path: Path) -> None:
    cert, key = tmp_path / "certs" / "c.pem", tmp_path / "certs" / "k.pem"
    assert ensure_certificate(cert, key, "gw.example") is True
    assert key.stat().st_mode & 0o777 == 0o600
    before = cert.read_bytes(), key.read_bytes()
    assert ensure_certificate(cert, key, "gw.example") is False
    assert (cert.read_bytes(), key.read_bytes()) == before


@pytest.mark.parametrize("missing", ["key", "cert"])
def test_one_file_missing_is_an_error_and_nothing_is_replaced(tmp_path: Path, missing: str) -> None:
    cert, key = _pair(tmp_path)
    gone, kept = (key, cert) if missing == "key" else (cert, key)
    gone.unlink()
    kept_bytes = kept.read_bytes()
    with pytest.raises(CertFileError) as err:
        ensure_certificate(cert, key, "gw.example")
    assert err.value.role == missing and err.value.path == gone
    assert str(kept) in err.value.problem and "nothing was replaced" in err.value.problem
    assert kept.read_bytes() == kept_bytes and not gone.exists()


def test_write_pair_refuses_existing_files_unless_told(tmp_path: Path) -> None:
    cert, key = _pair(tmp_path)
    before = cert.read_bytes(), key.read_bytes()
    with pytest.raises(FileExistsError):
        write_pair(make_self_signed("other.example"), cert, key)
    assert (cert.read_bytes(), key.read_bytes()) == before
    key.unlink()  # only the cert exists: still nothing is written
    with pytest.raises(FileExistsError):
        write_pair(make_self_signed("other.example"), cert, key)
    assert not key.exists() and cert.read_bytes() == before[0]
    write_pair(make_self_signed("other.example"), cert, key, overwrite=True)
    assert load_pair(cert, key).cert.subject != x509.load_pem_x509_certificate(before[0]).subject
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pem", "k.pem"]  # no temp files left


def test_write_private_is_0600_and_exclusive(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    write_private(path, b"one")
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):
        write_private(path, b"two")
    assert path.read_bytes() == b"one"


@pytest.mark.parametrize(
    ("breakage", "role", "problem"),
    [
        ("cert-garbage", "cert", "not a PEM certificate"),
        ("cert-directory", "cert", "is a directory"),
        ("key-garbage", "key", "not a PEM private key"),
        ("key-missing", "key", "does not exist"),
        ("key-other", "key", "does not belong to the certificate"),
        ("key-encrypted", "key", "is encrypted"),
    ],
)
def test_load_pair_names_the_bad_file(
    tmp_path: Path, breakage: str, role: str, problem: str
) -> None:
    cert, key = _pair(tmp_path)
    if breakage == "cert-garbage":
        cert.write_text("hello")
    elif breakage == "cert-directory":
        cert.unlink()
        cert.mkdir()
    elif breakage == "key-garbage":
        key.write_text("hello")
    elif breakage == "key-missing":
        key.unlink()
    elif breakage == "key-other":
        key.write_bytes(make_self_signed("gw.example").key_pem)
    else:
        loaded = serialization.load_pem_private_key(key.read_bytes(), password=None)
        key.write_bytes(
            loaded.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"pw"),
            )
        )
    with pytest.raises(CertFileError) as err:
        load_pair(cert, key)
    assert err.value.role == role and problem in err.value.problem
    assert str(err.value).startswith(str(cert if role == "cert" else key))


def test_a_chain_file_is_read_leaf_first(tmp_path: Path) -> None:
    ca = make_ca()
    leaf = make_signed("gw.example", ca)
    cert, key = tmp_path / "chain.pem", tmp_path / "k.pem"
    write_pair(type(leaf)(leaf.cert_pem + ca.cert_pem, leaf.key_pem), cert, key)
    loaded = load_pair(cert, key)
    assert loaded.chain_length == 2 and "gw.example" in certificate_names(loaded.cert)


@pytest.mark.parametrize(
    ("fqdn", "names", "ok"),
    [
        ("gw.example", ["gw.example"], True),
        ("GW.Example.", ["gw.example"], True),
        ("mail.corp.example", ["*.corp.example"], True),
        ("a.mail.corp.example", ["*.corp.example"], False),
        ("corp.example", ["*.corp.example"], False),
        ("gw.example", ["localhost", "127.0.0.1"], False),
        ("10.0.0.1", ["10.0.0.1"], True),
    ],
)
def test_name_matches(fqdn: str, names: list[str], ok: bool) -> None:
    assert name_matches(fqdn, names) is ok


def test_warnings_for_names_and_validity(tmp_path: Path) -> None:
    cert = load_pair(*_pair(tmp_path, "gw.example")).cert
    now = dt.datetime.now(dt.UTC)
    assert cert_warnings(cert, "gw.example", now) == []
    (mismatch,) = cert_warnings(cert, "mail.example", now)
    assert "do not include gateway.fqdn 'mail.example'" in mismatch and "gw.example" in mismatch
    (expired,) = cert_warnings(cert, "gw.example", now + dt.timedelta(days=3650))
    assert "expired" in expired


def test_csr_with_a_new_key_and_with_an_existing_one() -> None:
    pair = make_csr("gw.example", ("mail.example",))
    csr = x509.load_pem_x509_csr(pair.cert_pem)
    assert csr.is_signature_valid
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["gw.example", "mail.example"]
    key = serialization.load_pem_private_key(pair.key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert csr.public_key() == key.public_key()
    again = make_csr("gw.example", key_pem=pair.key_pem)
    assert again.key_pem == pair.key_pem
    assert x509.load_pem_x509_csr(again.cert_pem).public_key() == key.public_key()


def test_the_server_context_is_tls_1_2_or_later_and_refuses_renegotiation(tmp_path: Path) -> None:
    import ssl

    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    ensure_certificate(cert, key, "gw.example")
    ctx = server_ssl_context(cert, key)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_RENEGOTIATION
