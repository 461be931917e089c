"""``sentry run`` as a real process (SIGTERM), ``sentry certs init``, ``sentry demo-client``."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

from cryptography import x509

from sentry.cli import main
from sentry.testing.backend import BackendConfig, start_backend
from sentry.testing.demo_client import demo_client_main

CONFIG = """
gateway:
  listen: {{host: 127.0.0.1, port: 0}}
  tls: {{enabled: true, cert: certs/s.pem, key: certs/s.key}}
admin: {{listen: {{host: 127.0.0.1, port: 0}}, token_file: var/token}}
store: {{kind: sqlite, path: var/s.db}}
pools: [{{name: exchange, type: exchange, servers: ["{backend}"]}}]
routing: {{default: exchange}}
logging: {{format: json}}
"""


async def test_run_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    async with start_backend(BackendConfig()) as backend:
        (tmp_path / "sentry.yaml").write_text(CONFIG.format(backend=backend.url))
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
