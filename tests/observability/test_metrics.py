"""``Metrics.answered``: the per-request counter and histogram, through
values kept per label set and moved directly, with the samples
prometheus_client's own ``inc`` and ``observe`` give (one process and
workers); a child kept otherwise goes through the public methods."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, values
from prometheus_client.multiprocess import MultiProcessCollector

from sentry.observability import Metrics, mpvalues
from sentry.observability import metrics as metrics_module


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


# every bound, just above each, none, tiny and past the last: where observe's walk stops
_ELAPSED = [0.0, 1e-9, 0.0005, 0.00050001, 0.001, 0.0024, 0.0025, 0.1, 1.0, 2.5, 3600.0, 3601.0]


Samples = list[tuple[str, tuple[tuple[str, str], ...], float]]


def _samples(registry: CollectorRegistry) -> Samples:
    return sorted(
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in registry.collect()
        for s in family.samples
        if s.name.startswith(("sentry_requests", "sentry_request_duration"))
        and not s.name.endswith("_created")  # when each child was made: not the same
    )


def _answer_all(metrics: Metrics) -> None:
    for i, elapsed in enumerate(_ELAPSED):
        metrics.answered("Ping" if i % 2 else "Sync", "forward", 200 + i % 3 * 100, elapsed)
    metrics.in_flight_value.inc(1)
    metrics.in_flight_value.inc(1)
    metrics.in_flight_value.inc(-1)


def test_direct_updates_give_the_samples_inc_and_observe_give(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    direct = CollectorRegistry()
    metrics = Metrics(direct)
    _answer_all(metrics)
    assert all(type(v.count) is not metrics_module._Calls for v in metrics._answered.values())
    public = CollectorRegistry()
    monkeypatch.setattr(metrics_module, "_answer_values", metrics_module._public)
    monkeypatch.setattr(metrics_module, "_gauge_value", lambda g: metrics_module._Calls(g.inc))
    _answer_all(Metrics(public))
    assert _samples(direct) == _samples(public)
    assert direct.get_sample_value("sentry_requests_in_flight") == 1
    assert public.get_sample_value("sentry_requests_in_flight") == 1


class _Child:
    """A child kept some other way than prometheus_client keeps it now."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []

    def inc(self, amount: float = 1) -> None:
        self.calls.append(("inc", amount))

    def observe(self, amount: float) -> None:
        self.calls.append(("observe", amount))


def test_a_child_kept_otherwise_is_moved_through_its_public_methods() -> None:
    counter, histogram = _Child(), _Child()
    values = metrics_module._answer_values(counter, histogram)
    values.count.inc(1)
    values.total.inc(0.25)
    values.buckets[metrics_module.bisect_left(values.bounds, 0.25)].inc(1)
    assert counter.calls == [("inc", 1)] and histogram.calls == [("observe", 0.25)]
    odd = _Child()
    odd._value = odd._sum = _Child()  # type: ignore[attr-defined]
    odd._buckets, odd._upper_bounds = [_Child()], [1.0]  # type: ignore[attr-defined]  # no +Inf
    assert type(metrics_module._answer_values(odd, odd).count) is metrics_module._Calls


def test_under_workers_direct_updates_write_what_inc_and_observe_write(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The values moved directly are the multiprocess ones (mpvalues): the
    samples a scrape of the files reads are the public methods' samples."""

    def files(name: str, answer_values: Any) -> Samples:
        folder = tmp_path / name
        folder.mkdir()
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
        monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue())
        assert mpvalues.install()
        monkeypatch.setattr(metrics_module, "_answer_values", answer_values)
        _answer_all(Metrics(CollectorRegistry()))
        values.ValueClass.close_all_files()  # type: ignore[attr-defined]
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(folder))
        return _samples(registry)

    direct = files("direct", metrics_module._answer_values)
    public = files("public", metrics_module._public)
    assert direct == public and direct
