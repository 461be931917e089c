"""``sentry demo-backend``: option parsing, serve_forever, and a real process
stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from sentry.certs import make_self_signed, write_pair
from sentry.testing.backend import BackendConfig, MailboxSpec, RunningBackend
from sentry.testing.demo_cli import demo_backend_main, parse_users, serve_forever


def test_parse_users() -> None:
    assert parse_users("alice:secret@corp.test, bob:p@ss@example.org,carol:pw") == (
        MailboxSpec("alice", "secret", "alice@corp.test", "Alice (demo)"),
        MailboxSpec("bob", "p@ss", "bob@example.org", "Bob (demo)"),
        MailboxSpec("carol", "pw", "carol@example.com", "Carol (demo)"),
    )


@pytest.mark.parametrize("text", ["", "alice", "alice:", ":pw"])
def test_parse_users_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_users(text)


@pytest.mark.parametrize(
    "argv",
    [
        ["--users", "nobody"],
        ["--min-heartbeat", "100", "--max-heartbeat", "50"],
        ["--tls-cert", "/nonexistent.pem"],
    ],
)
def test_bad_options_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert demo_backend_main(argv) == 2
    assert "sentry demo-backend:" in capsys.readouterr().err


async def test_serve_forever_until_stopped() -> None:
    stop = asyncio.Event()
    ready: asyncio.Future[RunningBackend] = asyncio.get_running_loop().create_future()
    config = BackendConfig(backend_type="office365")
    async with asyncio.TaskGroup() as tg:
        tg.create_task(serve_forever(config, "127.0.0.1", 0, stop=stop, on_ready=ready.set_result))
        backend = await ready
        async with (
            aiohttp.ClientSession() as session,
            session.get(backend.url + "/_demo/stats") as r,
        ):
            assert (await r.json())["backend_type"] == "office365"
        stop.set()


async def test_standalone_process_with_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    write_pair(make_self_signed("localhost"), cert, key)
    code = (
        "import sys; from sentry.testing.demo_cli import demo_backend_main as m; "
        "sys.exit(m(sys.argv[1:]))"
    )
    args = ["--port", "0", "--type", "gmail", "--users", "dave:pw@corp.test"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        *args,
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout=60)).decode()
        assert "(gmail)" in line and "dave@corp.test" in line
        url = line.split(" on ")[1].split(" for ")[0]
        assert url.startswith("https://127.0.0.1:")
        async with aiohttp.ClientSession() as session, session.options(url, ssl=False) as r:
            assert r.status == 200 and r.headers["X-Demo-Backend-Type"] == "gmail"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=60) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
