"""The blocking reader's own rules that need no server: the bind password file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sentry.directory.ldap import DirectoryError, read_password
from sentry.errors import StartupError
from sentry.preflight import preflight
from sentry.settings import settings_from_mapping


def _file(tmp_path: Path, text: str, mode: int) -> Path:
    path = tmp_path / "pw"
    path.write_text(text)
    os.chmod(path, mode)
    return path


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o400])
def test_a_private_file_gives_the_password_without_its_line_end(tmp_path: Path, mode: int) -> None:
    assert read_password(_file(tmp_path, "s3cret pass\r\n", mode)) == "s3cret pass"


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o660, 0o666])
def test_a_file_open_to_others_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    path = _file(tmp_path, "s3cret", mode)
    with pytest.raises(DirectoryError) as exc:
        read_password(path)
    assert exc.value.kind == "config" and f"chmod 600 {path}" in exc.value.message
    assert "s3cret" not in str(exc.value)


def test_missing_empty_or_a_directory(tmp_path: Path) -> None:
    for path in (tmp_path / "absent", _file(tmp_path, "\n", 0o600), tmp_path):
        with pytest.raises(DirectoryError) as exc:
            read_password(path)
        assert exc.value.kind == "config"


def test_preflight_names_the_setting(tmp_path: Path) -> None:
    _file(tmp_path, "x", 0o644)
    ldap = {"urls": ["ldaps://dc1"], "bind_dn": "cn=s", "base_dn": "dc=x"}
    ldap |= {"bind_password_file": "pw", "ca_file": "missing-ca.pem"}
    settings = settings_from_mapping(
        {"gateway": {"tls": {"enabled": False}}, "directory": {"ldap": ldap}}
    )
    report = preflight(settings, tmp_path, create=False)
    keys = [p.key for p in report.problems]
    assert "directory.ldap.bind_password_file" in keys
    first = next(p for p in report.problems if p.key == "directory.ldap.bind_password_file")
    assert isinstance(first, StartupError) and "open to others" in first.problem
    os.chmod(tmp_path / "pw", 0o600)
    keys = [p.key for p in preflight(settings, tmp_path, create=False).problems]
    assert keys == ["directory.ldap.ca_file"]
