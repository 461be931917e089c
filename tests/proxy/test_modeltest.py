"""The model-based wire test (issue 9, "How to prove it").

Hypothesis draws a configuration and a sequence of steps (requests in every
identity spelling and both query forms, Basic and Bearer, admin actions,
preference changes, compliance flips, pushes, backend-type resets, restarts:
``sentry.testing.modelsteps``); ``sentry.testing.modelrun`` plays them against
a running gateway with two recording backends of different types and against
the independent model of ``sentry.testing.model``. Any request a backend sees
that the model refuses, or misses that it allows, fails with the shrunk
sequence. Bounded here (about a minute on two busy cores, derandomized, no
example database);
``python -m bench modeltest`` runs the long profile.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings

from sentry.testing.modelrun import SUITE_PROFILE, run
from sentry.testing.modelsteps import Config, Step, configs, sequences
from sentry.testing.oauth import TokenIssuer

ISSUER = TokenIssuer()


@settings(
    max_examples=SUITE_PROFILE["examples"],
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(configs(), sequences(SUITE_PROFILE["min_steps"], SUITE_PROFILE["max_steps"]))
def test_backends_see_exactly_what_the_model_allows(config: Config, sequence: list[Step]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(Path(tmp), config, sequence, ISSUER))
