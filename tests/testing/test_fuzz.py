"""The request-path fuzz target, bounded: a fixed Hypothesis profile of a few
seconds (``python -m bench fuzz`` runs the long one)."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings

from sentry.testing.fuzz import FuzzTarget, cast_request
from sentry.testing.fuzz_requests import ALLOWED, BLOCKED, raw_requests, request_specs, serialise

EXAMPLES = int(os.environ.get("SENTRY_FUZZ_EXAMPLES", "60"))


def test_raw_requests_through_the_whole_request_path(tmp_path: Path) -> None:
    with FuzzTarget(tmp_path) as target:

        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(raw_requests())
        def one(data: bytes) -> None:
            target.exchange(data)

        one()
        # the cast is really exercised: an allowed request is forwarded, a blocked one is not
        assert target.exchange(cast_request("FolderSync", *ALLOWED)) == [200]
        assert target.exchange(cast_request("FolderSync", *BLOCKED)) == [200]  # Status 129
        target.final_check()
    assert target.report.forwarded >= 1
    assert not target.report.problems


@settings(max_examples=50, derandomize=True, database=None)
@given(request_specs())
def test_specs_serialise_to_one_http_head(spec) -> None:
    data = serialise(spec)
    assert data.startswith(spec.method.encode() + b" ")
    assert spec.eol + spec.eol in data
