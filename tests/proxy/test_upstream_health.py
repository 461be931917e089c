"""Passive and active health of backend servers, with real failures: a closed
port, a TLS server whose certificate does not verify, a server answering 500,
one that never answers, a name that does not resolve. Each is reported with
its reason, logged once per change of state and counted by kind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from sentry.certs import make_self_signed, server_ssl_context, write_pair
from sentry.observability import Metrics
from sentry.proxy.health import FAILURE_KINDS, Failure, ServerHealth, State
from sentry.proxy.upstream import Server, Upstreams
from sentry.settings import BackendPoolSettings, HealthCheckSettings
from sentry.testing.backend import BackendConfig, start_backend
from sentry.testing.faulty import refusing_port, silent_backend, status_backend, url_of

REFUSED = Failure("refused", "connection refused")


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for ``condition()`` (a hang guard of 10 s, not a speed check)."""
    try:
        async with asyncio.timeout(10):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"never happened: {what}") from None


@asynccontextmanager
async def checked(
    url: str, *, timeout: float = 1.0, failures_to_down: int = 2
) -> AsyncIterator[tuple[Server, CollectorRegistry]]:
    """One pool ``p`` with one server at ``url``, checked every 20 ms."""
    hc = HealthCheckSettings(
        interval_seconds=0.02, timeout_seconds=timeout, failures_to_down=failures_to_down
    )
    registry = CollectorRegistry()
    upstreams = Upstreams((BackendPoolSettings("p", "exchange", (url,), hc),), Metrics(registry))
    await upstreams.start()
    try:
        yield upstreams.pools["p"].servers[0], registry
    finally:
        await upstreams.close()


async def down_for(url: str, **options: Any) -> tuple[ServerHealth, CollectorRegistry, list]:
    """Check ``url`` until it has failed three checks; return its health and the log."""
    with capture_logs() as logs:
        async with checked(url, **options) as (server, registry):
            await until(lambda: server.failures >= 3, "three failed checks")
            health = server.health
    return health, registry, logs


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


async def test_a_closed_port_is_down_refused_logged_once_and_counted() -> None:
    with refusing_port() as sock:
        url = url_of(sock)
        health, registry, logs = await down_for(url)
    assert (health.state, health.failure.kind) == (State.DOWN, "refused")
    assert health.failure.detail == "connection refused"
    assert health.since is not None and health.last_check is not None
    (down,) = events(logs, "backend_down")  # three failed checks, one change of state
    assert (down["pool"], down["server"], down["reason"]) == ("p", url, "refused")
    assert (down["previous"], down["check"], down["log_level"]) == ("unknown", "active", "warning")
    assert sample(registry, "sentry_backend_marked_down_total", pool="p", reason="refused") == 1
    failed = sample(registry, "sentry_backend_check_failures_total", pool="p", reason="refused")
    assert failed >= 3


async def test_an_untrusted_certificate_is_down_with_the_verification_error(
    tmp_path: Path,
) -> None:
    cert, key = tmp_path / "backend.pem", tmp_path / "backend.key"
    write_pair(make_self_signed("localhost"), cert, key)
    tls = server_ssl_context(cert, key)
    async with start_backend(BackendConfig(), ssl_context=tls) as backend:
        health, registry, logs = await down_for(backend.url)
    assert (health.state, health.failure.kind) == (State.DOWN, "tls_verify")
    assert health.failure.detail.startswith("certificate verification failed: ")
    assert "self-signed" in health.failure.detail or "self signed" in health.failure.detail
    assert [e["reason"] for e in events(logs, "backend_down")] == ["tls_verify"]
    assert sample(registry, "sentry_backend_marked_down_total", pool="p", reason="tls_verify") == 1


async def test_a_server_answering_500_is_down_with_the_status() -> None:
    async with status_backend(500) as backend:
        health, _, logs = await down_for(backend.url)
        assert backend.answered >= 3
    assert (health.state, health.failure.kind) == (State.DOWN, "bad_status")
    assert health.failure.detail == "answered HTTP 500"
    assert len(events(logs, "backend_down")) == 1


async def test_a_server_answering_401_is_alive() -> None:
    async with status_backend(401) as backend, checked(backend.url) as (server, _):
        await until(lambda: server.health.state is State.UP, "up")
        assert server.health.failure is None


async def test_a_server_that_never_answers_is_down_on_timeout() -> None:
    async with silent_backend() as backend:
        health, _, _ = await down_for(backend.url, timeout=0.05)
        assert backend.accepted >= 1
    assert (health.state, health.failure.kind) == (State.DOWN, "timeout")
    assert health.failure.detail == "no answer within the timeout"


async def test_a_name_that_does_not_resolve_is_down_dns() -> None:
    health, _, _ = await down_for("http://sentry-test.invalid:8080", timeout=5)
    assert (health.state, health.failure.kind) == (State.DOWN, "dns")
    assert health.failure.detail == "name resolution failed for sentry-test.invalid"


async def test_down_then_up_again_is_two_lines_and_credentials_never_show() -> None:
    with refusing_port() as sock, capture_logs() as logs:
        host_port = url_of(sock).removeprefix("http://")
        url = f"http://admin:s3cret-pw@{host_port}"
        async with checked(url) as (server, registry):
            await until(lambda: server.health.state is State.DOWN, "down")
            assert server.label == f"http://{host_port}"
            async with start_backend(BackendConfig(), sock=sock):
                await until(lambda: server.health.state is State.UP, "up again")
                assert sample(registry, "sentry_backend_pool_healthy_servers", pool="p") == 1
                assert sample(registry, "sentry_backend_server_up", pool="p", server=server.label)
    lines = [e for e in logs if e["event"] in ("backend_down", "backend_up")]
    assert [(e["event"], e["previous"]) for e in lines] == [
        ("backend_down", "unknown"),
        ("backend_up", "down"),
    ]
    assert lines[1]["down_seconds"] >= 0
    assert "s3cret-pw" not in repr(logs)


async def test_an_up_server_goes_down_after_the_configured_failures() -> None:
    health, ok, refused = ServerHealth(), None, REFUSED
    assert health.observe(ok, 1.0, failures_to_down=3, active=True) is not None  # unknown -> up
    assert health.observe(refused, 2.0, failures_to_down=3, active=True) is None
    assert health.observe(refused, 3.0, failures_to_down=3, active=True) is None
    assert (health.state, health.failures, health.failure) == (State.UP, 2, refused)
    change = health.observe(refused, 4.0, failures_to_down=3, active=True)
    assert change is not None and (change.before, change.after) == (State.UP, State.DOWN)
    assert (change.seconds_before, health.since) == (3.0, 4.0)
    assert health.observe(refused, 5.0, failures_to_down=3, active=True) is None  # still down
    back = health.observe(ok, 9.0, failures_to_down=3, active=True)
    assert back is not None and back.seconds_before == 5.0 and health.failure is None


def test_a_failed_connection_marks_an_up_server_down_at_once() -> None:
    health = ServerHealth(State.UP, since=0.0)
    change = health.observe(REFUSED, 1.0, failures_to_down=5, active=False)
    assert change is not None and change.after is State.DOWN
    assert health.last_check is None  # a request is not a check


@pytest.mark.parametrize("kind", sorted(FAILURE_KINDS))
def test_every_failure_kind_is_a_bounded_label(kind: str) -> None:
    assert kind.isidentifier() and kind == kind.lower()
