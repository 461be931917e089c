"""``sentry run`` as a real process (SIGTERM), ``sentry certs init``, ``sentry demo-client``."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from sentry.cli import main
from sentry.testing.backend import BackendConfig, start_backend
from sentry.testing.demo_client import demo_client_main

CONFIG = """
gateway:
  listen: {{host: 127.0.0.1, port: 0}}
  tls: {{enabled: true, cert: certs/s.pem, key: certs/s.key}}
  event_loop: {loop}
admin: {{listen: {{host: 127.0.0.1, port: 0}}, token_file: var/token}}
store: {{kind: sqlite, path: var/s.db}}
pools: [{{name: exchange, type: exchange, servers: ["{backend}"]}}]
routing: {{default: exchange}}
logging: {{format: json}}
"""


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_run_serves_and_stops_on_sigterm(tmp_path: Path, loop: str) -> None:
    async with start_backend(BackendConfig()) as backend:
        (tmp_path / "sentry.yaml").write_text(CONFIG.format(backend=backend.url, loop=loop))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sentry", "run", "--config", "sentry.yaml",
            cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        assert proc.stdout is not None
        try:
            url = None
            while url is None:
                line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
                assert line, "sentry run exited early"
                if m := re.search(r'"devices": "(https://[^"]+)"', line):
                    url = m.group(1)
            args = ["--url", url, "--user", "alice", "--password", "secret", "--insecure"]
            status = await asyncio.to_thread(demo_client_main, args)
            assert status == 0
            assert backend.stats.requests[("alice", "Sync")] == 2
        finally:
            proc.send_signal(signal.SIGTERM)
            rest = (await asyncio.wait_for(proc.stdout.read(), 60)).decode()
            code = await proc.wait()
        assert code == 0
        assert '"event": "stopped"' in rest
        assert (tmp_path / "var" / "token").stat().st_mode & 0o777 == 0o600


def test_run_rejects_a_bad_config(tmp_path: Path, capsys: object) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("gateway: {listen: {port: 99999}}\n")
    assert main(["run", "--config", str(bad)]) == 2


def test_certs_init_with_ca(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    args = ["certs", "init", "--fqdn", "gw.example", "--cert", str(cert), "--key", str(key), "--ca"]
    assert main(args) == 0
    loaded = x509.load_pem_x509_certificate(cert.read_bytes())
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    assert loaded.issuer == ca.subject
    san = loaded.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "gw.example" in san.get_values_for_type(x509.DNSName)
    assert key.stat().st_mode & 0o777 == 0o600


# --- start-up errors: one line naming the setting, exit 2, nothing destroyed ---


def _sentry(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sentry", *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _write_config(
    tmp_path: Path, backend: str = "http://127.0.0.1:1", fqdn: str = "localhost", **extra: str
) -> Path:
    text = CONFIG.format(backend=backend, loop="asyncio").replace(
        "gateway:\n", f"gateway:\n  fqdn: {fqdn}\n"
    )
    for section, value in extra.items():
        text += f"{section}: {value}\n"
    path = tmp_path / "sentry.yaml"
    path.write_text(text.replace("logging: {format: json}\n", ""))
    return path


def _one_line_error(err: str, start: str) -> None:
    assert err.startswith(f"sentry: error: {start}"), err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_a_missing_key_stops_the_start_and_keeps_the_certificate(tmp_path: Path) -> None:
    _write_config(tmp_path)
    config, certs = str(tmp_path / "sentry.yaml"), tmp_path / "certs"
    args = ["--cert", str(certs / "s.pem"), "--key", str(certs / "s.key")]
    assert main(["certs", "init", "--config", config, *args]) == 0
    cert = (tmp_path / "certs" / "s.pem").read_bytes()
    (tmp_path / "certs" / "s.key").unlink()
    done = _sentry("run", "--config", "sentry.yaml", cwd=tmp_path)
    assert done.returncode == 2
    _one_line_error(done.stderr, "gateway.tls.key: certs/s.key: missing, but certs/s.pem exists")
    assert (tmp_path / "certs" / "s.pem").read_bytes() == cert
    assert not (tmp_path / "certs" / "s.key").exists()


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            {"logging": "{file: nowhere/sentry.log}"},
            "logging.file: directory nowhere does not exist",
        ),
        ({}, "store.path: var/s.db is a directory"),
        ({"cert": "garbage"}, "gateway.tls.cert: certs/s.pem: not a PEM certificate"),
    ],
)
def test_bad_files_are_one_line_errors(
    tmp_path: Path, extra: dict[str, str], expected: str
) -> None:
    extra = dict(extra)  # the parameter is shared between runs
    cert = extra.pop("cert", None)
    _write_config(tmp_path, **extra)
    if "logging" not in extra and cert is None:
        (tmp_path / "var" / "s.db").mkdir(parents=True)
    if cert is not None:  # a certificate file that cannot be used
        (tmp_path / "certs").mkdir()
        (tmp_path / "certs" / "s.pem").write_text("-----BEGIN CERTIFICATE-----\nnope\n")
        (tmp_path / "certs" / "s.key").write_text("")
    done = _sentry("run", "--config", "sentry.yaml", cwd=tmp_path)
    assert done.returncode == 2
    _one_line_error(done.stderr, expected)


def test_run_check_validates_without_creating_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    _write_config(tmp_path, fqdn="mail.example")
    assert main(["run", "--config", "sentry.yaml", "--check"]) == 0
    out, err = capsys.readouterr()
    assert out == "sentry.yaml: ok\n"
    assert err.startswith("sentry: warning: gateway.tls.cert: ") and "will be made at start" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sentry.yaml"]
    args = ["certs", "init", "--config", "sentry.yaml", "--fqdn", "other.example"]
    assert main([*args, "--cert", "certs/s.pem", "--key", "certs/s.key"]) == 0
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "s.db").write_text("not a database")
    capsys.readouterr()
    assert main(["run", "--config", "sentry.yaml", "--check"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert lines[0].startswith("sentry: warning: gateway.tls.cert: certs/s.pem: the certificate's")
    assert "do not include gateway.fqdn 'mail.example'" in lines[0]
    assert lines[1:] == ["sentry: error: store.path: var/s.db is not an SQLite database"]


def test_run_check_names_a_missing_oauth_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    oauth = "{oauth: {issuer: https://idp.example, audience: [eas], jwks_file: keys.json}}"
    _write_config(tmp_path, identity=oauth)
    assert main(["run", "--config", "sentry.yaml", "--check"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1] == "sentry: error: identity.oauth.jwks_file: keys.json is not a file"


def test_run_check_reports_a_bad_configuration(tmp_path: Path, capsys: object) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("gateway: {tls: {cert: 5}}\n")
    assert main(["run", "--config", str(bad), "--check"]) == 2


# --- sentry certs init / csr follow the configuration, never overwrite ---


def test_certs_init_follows_config_and_refuses_to_overwrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    _write_config(tmp_path, fqdn="gw.corp.example")
    assert main(["certs", "init", "--config", "sentry.yaml"]) == 0
    cert = x509.load_pem_x509_certificate((tmp_path / "certs" / "s.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "gw.corp.example" in san.get_values_for_type(x509.DNSName)
    before = (tmp_path / "certs" / "s.pem").read_bytes()
    capsys.readouterr()
    assert main(["certs", "init", "--config", "sentry.yaml"]) == 2
    assert (
        "certs/s.pem exists; nothing was written (--force replaces it)" in capsys.readouterr().err
    )
    assert (tmp_path / "certs" / "s.pem").read_bytes() == before
    assert (
        main(["certs", "init", "--config", "sentry.yaml", "--force", "--fqdn", "new.example"]) == 0
    )
    assert (tmp_path / "certs" / "s.pem").read_bytes() != before


def test_certs_init_without_config_needs_a_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["certs", "init"]) == 2
    assert "give --fqdn" in capsys.readouterr().err
    assert not (tmp_path / "certs").exists()


def test_certs_csr_new_key_then_reuse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    _write_config(tmp_path)
    assert main(["certs", "csr", "--config", "sentry.yaml", "--fqdn", "gw.example"]) == 0
    key = tmp_path / "certs" / "s.key"
    csr = x509.load_pem_x509_csr((tmp_path / "certs" / "s.pem.csr").read_bytes())
    assert key.stat().st_mode & 0o777 == 0o600 and not (tmp_path / "certs" / "s.pem").exists()
    capsys.readouterr()
    assert main(["certs", "csr", "--config", "sentry.yaml", "--fqdn", "gw.example"]) == 2
    assert "--reuse-key" in capsys.readouterr().err
    out = tmp_path / "again.csr"
    args = ["certs", "csr", "--config", "sentry.yaml", "--fqdn", "gw.example", "--reuse-key"]
    assert main([*args, "--out", str(out), "--san", "mail.example"]) == 0
    again = x509.load_pem_x509_csr(out.read_bytes())
    assert again.public_key() == csr.public_key()
    san = again.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["gw.example", "mail.example"]


# --- SIGHUP on a real process ---


async def _wait_for_line(path: Path, text: str, timeout: float = 60) -> str:
    async with asyncio.timeout(timeout):
        while True:
            if path.exists():
                for line in path.read_text().splitlines():
                    if text in line:
                        return line
            await asyncio.sleep(0.05)


async def test_sighup_reopens_the_log_and_reloads_the_configuration(tmp_path: Path) -> None:
    async with start_backend(BackendConfig()) as backend:
        config = _write_config(tmp_path, backend.url, logging="{format: json, file: sentry.log}")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sentry", "run", "--config", "sentry.yaml", cwd=tmp_path
        )
        log = tmp_path / "sentry.log"
        try:
            await _wait_for_line(log, '"event": "started"')
            assert log.stat().st_mode & 0o777 == 0o600
            log.rename(tmp_path / "sentry.log.1")  # what logrotate does
            config.write_text(config.read_text() + "preferences: {max_devices_per_mailbox: 2}\n")
            proc.send_signal(signal.SIGHUP)
            line = await _wait_for_line(log, '"event": "config_reloaded"')
            assert '"changed": ["preferences"]' in line
            config.write_text(config.read_text() + "bogus: 1\n")
            proc.send_signal(signal.SIGHUP)
            line = await _wait_for_line(log, '"event": "reload_failed"')
            assert "bogus: unknown key" in line
        finally:
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), 60)
        assert code == 0
        assert '"event": "stopped"' in log.read_text()
        assert '"event": "started"' not in log.read_text()
