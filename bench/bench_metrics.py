"""A request's metrics: ``Metrics.answered`` and the in-flight gauge, through
prometheus_client's ``inc`` and ``observe`` against the values moved directly.

Approach. Every request moves ``sentry_requests_in_flight`` up and down, one
``sentry_requests_total`` child and one ``sentry_request_duration_seconds``
child (``handler.serve_device``, ``Metrics.answered``). Two ``Metrics`` on
registries of their own: one moved as the gateway moves it now (the values
directly, ``metrics._answer_values``), one as it did before (the gauge's
``inc`` and ``dec``, the children kept per label set and their ``inc`` and
``observe``: prometheus_client's public methods). Each times a request's
updates over a mix of commands, decisions and durations (best of 5 x
100,000); then both registries are collected and must hold the same
samples, or the script exits non-zero.

    .venv/bin/python bench/bench_metrics.py [--quick]
"""

from __future__ import annotations

import sys
import timeit
from itertools import cycle
from typing import Any

from prometheus_client import CollectorRegistry

from sentry.observability.metrics import Metrics, status_class

# (command, decision, status, elapsed): the bench mix's commands, a refusal, slow ones
MIX = [
    ("Sync", "forward", 200, 0.0011),
    ("GetItemEstimate", "forward", 200, 0.0009),
    ("Ping", "forward", 200, 0.0013),
    ("Sync", "forward", 200, 0.0012),
    ("SendMail", "forward", 200, 0.0024),
    ("FolderSync", "forward", 200, 0.001),
    ("Provision", "forward", 200, 0.0031),
    ("Ping", "refuse", 403, 0.0004),
    ("Ping", "forward", 200, 540.0),
]


def _request(metrics: Metrics, answers: Any) -> None:
    command, decision, status, elapsed = next(answers)
    metrics.in_flight_value.inc(1)
    metrics.in_flight_value.inc(-1)
    metrics.answered(command, decision, status, elapsed)


class _Before:
    """A request's metrics as the gateway moved them before: public methods."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def __call__(self, answers: Any) -> None:
        command, decision, status, elapsed = next(answers)
        metrics = self.metrics
        metrics.in_flight.inc()
        metrics.in_flight.dec()
        key = (command, decision, status // 100)
        children = self.children.get(key)
        if children is None:
            children = self.children[key] = (
                metrics.requests.labels(command, decision, status_class(status)),
                metrics.latency.labels(command),
            )
        children[0].inc()
        children[1].observe(elapsed)


def _samples(registry: CollectorRegistry) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
    return sorted(
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in registry.collect()
        for s in family.samples
        if s.name.startswith(("sentry_requests", "sentry_request_duration"))
        and not s.name.endswith("_created")
    )


def main(argv: list[str]) -> None:
    quick = "--quick" in argv
    number, repeat = (2_000, 2) if quick else (100_000, 5)
    direct, public = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    before = _Before(public)
    rows = []
    for name, request in (
        ("inc, dec, observe (prometheus_client's methods, before)", before),
        ("values moved directly (Metrics.answered)", lambda a: _request(direct, a)),
    ):
        answers = cycle(MIX)
        best = min(timeit.repeat(lambda r=request, a=answers: r(a), number=number, repeat=repeat))
        rows.append((name, best / number * 1e6))
    if _samples(direct.registry) != _samples(public.registry):
        sys.exit("the two paths left different samples")
    base = rows[0][1]
    print(f"a request's metrics (in flight up and down, answered), best of {repeat} x {number:,}\n")
    print("| path | µs | ratio |")
    print("| --- | ---: | ---: |")
    for name, us in rows:
        print(f"| {name} | {us:.3f} | {us / base:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
