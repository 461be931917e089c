"""The model-based wire test, long profile (issue 9, "How to prove it").

Method. ``sentry.testing.modelrun.run_profile`` runs Hypothesis examples, each
a fresh gateway (SQLite store, two pools of different types behind strict
recording backends) driven by a drawn configuration and a sequence of
requests, admin actions, compliance flips, pushes, backend-type resets and
restarts, checked step by step against the independent model of
``sentry.testing.model``. The suite runs the bounded profile (``SUITE_PROFILE``: 40 examples of
10-45 steps, derandomized); this runs it first as the baseline, then the long
profile (by default 300 examples of 30-120 steps, random unless ``--seed``),
and reports for each the examples, steps, requests checked, refusals by
reason, restarts and time, and the long profile's coverage as a ratio of the
baseline's. A mismatch fails the run with the shrunk sequence.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

__all__ = ["modeltest_markdown", "run_modeltest"]


def _quiet() -> None:
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    logging.disable(logging.WARNING)


def _profile(
    work: Path, examples: int, min_steps: int, max_steps: int, **kw: Any
) -> dict[str, Any]:
    from sentry.testing.modelrun import run_profile  # Hypothesis: a test dependency

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = time.monotonic()
    stats = run_profile(work, examples, max_steps, min_steps=min_steps, **kw)
    seconds = time.monotonic() - started
    shutil.rmtree(work, ignore_errors=True)
    return {
        "examples": stats.examples,
        "steps": stats.steps,
        "requests": stats.requests,
        "forwarded": stats.forwarded,
        "refused": stats.refused,
        "restarts": stats.restarts,
        "outcomes": dict(sorted(stats.outcomes.items(), key=lambda kv: -kv[1])),
        "admin": dict(sorted(stats.admin.items())),
        "seconds": seconds,
        "requests_per_second": stats.requests / seconds if seconds else 0.0,
    }


def run_modeltest(
    work: Path,
    examples: int,
    min_steps: int,
    max_steps: int,
    seed: int | None,
    suite_examples: int | None = None,
) -> dict[str, Any]:
    from sentry.testing.modelrun import SUITE_PROFILE

    _quiet()
    suite = {**SUITE_PROFILE, "examples": suite_examples or SUITE_PROFILE["examples"]}
    baseline = _profile(work / "suite", derandomize=True, **suite)
    long = _profile(work / "long", examples, min_steps, max_steps, seed_value=seed)
    return {
        "scenario": "modeltest",
        "options": {
            "examples": examples,
            "min_steps": min_steps,
            "max_steps": max_steps,
            "seed": seed,
            "suite_examples": suite["examples"],
        },
        "suite_profile": baseline,
        "long_profile": long,
        "requests_vs_suite": long["requests"] / max(1, baseline["requests"]),
    }


def modeltest_markdown(r: dict[str, Any]) -> str:
    rows = [
        "| profile | examples | steps | requests checked | forwarded | refused | restarts "
        "| time | requests/s |",
        "| --- |" + " ---: |" * 8,
    ]
    for name in ("suite_profile", "long_profile"):
        p = r[name]
        rows.append(
            f"| {name.split('_')[0]} | {p['examples']:,} | {p['steps']:,} | {p['requests']:,} | "
            f"{p['forwarded']:,} | {p['refused']:,} | {p['restarts']:,} | {p['seconds']:.0f} s | "
            f"{p['requests_per_second']:.0f} |"
        )
    reasons = ", ".join(f"{k}: {v:,}" for k, v in r["long_profile"]["outcomes"].items())
    admin = ", ".join(f"{k}: {v:,}" for k, v in r["long_profile"]["admin"].items())
    return (
        "\n".join(rows)
        + f"\n\nThe long profile checked {r['requests_vs_suite']:.1f}x the requests of the "
        f"suite's profile, with no mismatch. Verdicts of the long profile: {reasons}. "
        f"Admin steps by answer: {admin}."
    )
