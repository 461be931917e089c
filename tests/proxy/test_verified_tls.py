"""Backend certificate verification, exercised once for real (trustme).

Every other test talks to plain-HTTP demo backends or switches verification
off. Here a demo backend serves HTTPS with a certificate of a trustme test CA,
and ``sentry run`` (a subprocess: the CA reaches it the way an operator's
would, through OpenSSL's ``SSL_CERT_FILE``) forwards to it with
``tls_verify`` on, the default: with the CA trusted a device's Sync reaches
the backend; without it nothing is forwarded.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import ssl
import sys
from pathlib import Path

import pytest
import trustme

from sentry.eas.errors import WbxmlError
from sentry.testing.backend import start_backend
from sentry.testing.demo_client import demo_client_main
from sentry.testing.state import BackendConfig

CONFIG = """
gateway:
  listen: {{host: 127.0.0.1, port: 0}}
  tls: {{enabled: false}}
admin: {{listen: {{host: 127.0.0.1, port: 0}}, token_file: var/token}}
store: {{kind: sqlite, path: var/s.db}}
pools: [{{name: exchange, type: exchange, servers: ["{backend}"]}}]
routing: {{default: exchange}}
logging: {{format: json}}
"""


@pytest.mark.parametrize("trusted", [True, False])
async def test_the_backend_certificate_is_verified(tmp_path: Path, trusted: bool) -> None:
    ca = trustme.CA()
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(served)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    env = dict(os.environ)
    env.pop("SSL_CERT_DIR", None)
    env["SSL_CERT_FILE"] = str(ca_file) if trusted else os.devnull
    async with start_backend(BackendConfig(), ssl_context=served) as backend:
        assert backend.url.startswith("https://")
        (tmp_path / "sentry.yaml").write_text(CONFIG.format(backend=backend.url))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sentry", "run", "--config", "sentry.yaml",
            cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        assert proc.stdout is not None
        try:
            url = None
            while url is None:
                line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
                assert line, "sentry run exited early"
                if m := re.search(r'"devices": "(http://[^"]+)"', line):
                    url = m.group(1)
            args = ["--url", url, "--user", "alice", "--password", "secret"]
            try:
                status: int | None = await asyncio.to_thread(demo_client_main, args)
            except WbxmlError:  # the client cannot read the gateway's 502/503 text
                status = None
        finally:
            proc.send_signal(signal.SIGTERM)
            rest = (await asyncio.wait_for(proc.stdout.read(), 60)).decode()
            await proc.wait()
    if trusted:
        assert status == 0
        assert backend.stats.requests[("alice", "Sync")] >= 1
    else:
        assert status != 0  # refused by the gateway: nothing was forwarded
        assert backend.stats.requests[("alice", "Sync")] == 0
        assert "tls_verify" in rest or "certificate verif" in rest.lower()
