"""The composition root: the admin listener over TLS, the warning for a
non-loopback admin bind, start-up errors naming the setting, build and process
metrics, association states named as in the API."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from sentry.buildinfo import python_version, version
from sentry.cli import main
from sentry.errors import StartupError
from sentry.listeners import is_loopback
from sentry.testing.eas_client import EasTestClient
from sentry.testing.gateway import demo_gateway


async def test_admin_listener_over_tls_and_the_cli_trusts_its_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = {"listen": {"host": "127.0.0.1", "port": 0}, "tls": {"enabled": True}}
    async with demo_gateway(tmp_path, admin=admin | {"token_file": "admin-token"}) as gw:
        assert gw.admin_url.startswith("https://")
        cert = tmp_path / "certs" / "sentry.pem"  # the device listener's pair by default
        argv = ["admin", "prefs", "show", "--url", gw.admin_url, "--json"]
        argv += ["--token", gw.gateway.admin_token, "--cacert", str(cert)]
        capsys.readouterr()  # the gateway's start-up log lines
        with capture_logs():
            assert await asyncio.to_thread(main, argv) == 0
        assert "auto_block_unregistered" in json.loads(capsys.readouterr().out)
        with capture_logs():  # without the certificate to trust: refused, exit 2
            code = await asyncio.to_thread(main, argv[:-2])
        assert code == 2 and "CERTIFICATE_VERIFY_FAILED" in capsys.readouterr().err


async def test_a_non_loopback_admin_bind_warns(tmp_path: Path) -> None:
    admin = {"listen": {"host": "0.0.0.0", "port": 0}, "token_file": "admin-token"}
    with capture_logs() as logs:
        async with demo_gateway(tmp_path, admin=admin):
            pass
    (warning,) = [e for e in logs if e["event"] == "admin_listen_not_loopback"]
    assert warning["log_level"] == "warning" and warning["host"] == "0.0.0.0"
    assert "travels in clear" in warning["problem"]


def test_is_loopback() -> None:
    assert [is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "gw.lan")] == [
        True,
        True,
        True,
        False,
        False,
    ]


async def test_a_taken_port_names_the_listen_setting(tmp_path: Path) -> None:
    async with demo_gateway(tmp_path / "one") as first:
        port = int(first.url.rsplit(":", 1)[1])
        gateway = {"listen": {"host": "127.0.0.1", "port": port}}
        with pytest.raises(StartupError) as err, capture_logs():
            async with demo_gateway(tmp_path / "two", gateway=gateway):
                pass
    assert err.value.key == "gateway.listen" and f"127.0.0.1:{port}" in err.value.problem


async def test_build_process_and_state_metrics(tmp_path: Path) -> None:
    async with demo_gateway(tmp_path) as gw, aiohttp.ClientSession() as http:
        client = EasTestClient(
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)),
            f"{gw.url}/Microsoft-Server-ActiveSync",
            "alice",
            "secret",
            device_id="METRICS1",
        )
        async with client.session:
            await client.provision()
        gw.gateway.metrics.publish_state(gw.gateway.state.snapshot)
        async with http.get(gw.admin_url + "/metrics") as resp:
            text = await resp.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    (info,) = families["sentry_build_info"].samples
    assert info.labels == {"version": version(), "python": python_version()} and info.value == 1
    for name in ("process_resident_memory_bytes", "process_open_fds", "process_cpu_seconds"):
        assert families[name].samples[0].value > 0, name
    states = {s.labels["state"]: s.value for s in families["sentry_associations"].samples}
    assert states == {"allowed": 1, "blocked": 0, "quarantined": 0, "wipe_pending": 0, "wiped": 0}


async def test_a_certificate_for_another_name_is_a_warning_at_start(tmp_path: Path) -> None:
    from sentry.certs import make_self_signed, write_pair

    write_pair(
        make_self_signed("old.example"),
        tmp_path / "certs/sentry.pem",
        tmp_path / "certs/sentry.key",
    )
    with capture_logs() as logs:
        async with demo_gateway(tmp_path, gateway={"fqdn": "mail.example"}):
            pass
    (warning,) = [e for e in logs if e["event"] == "startup_warning"]
    assert warning["log_level"] == "warning"
    assert "do not include gateway.fqdn 'mail.example'" in warning["problem"]
    assert not [e for e in logs if e["event"] == "certificate_generated"]  # nothing replaced
