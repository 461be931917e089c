"""``Metrics.answered``: the per-request counter and histogram, through
children kept per label set."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from sentry.observability import Metrics


def test_answered_counts_each_request_under_its_labels_and_times_it() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    for status in (200, 204, 200, 403, 503):
        metrics.answered("Ping", "forward" if status < 400 else "refuse", status, 0.002)
    metrics.answered("Sync", "forward", 200, 0.2)

    def requests(command: str, decision: str, status_class: str) -> float:
        labels = {"command": command, "decision": decision, "status_class": status_class}
        return registry.get_sample_value("sentry_requests_total", labels) or 0.0

    assert requests("Ping", "forward", "2xx") == 3
    assert requests("Ping", "refuse", "4xx") == 1 and requests("Ping", "refuse", "5xx") == 1
    assert requests("Sync", "forward", "2xx") == 1
    count = "sentry_request_duration_seconds_count"
    assert registry.get_sample_value(count, {"command": "Ping"}) == 5
    assert registry.get_sample_value(count, {"command": "Sync"}) == 1
    total = "sentry_request_duration_seconds_sum"
    assert abs((registry.get_sample_value(total, {"command": "Sync"}) or 0) - 0.2) < 1e-9
