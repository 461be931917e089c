"""Suite-wide settings that keep the suite deterministic on a loaded machine, and
the real PostgreSQL of the store tests (fixtures in ``sentry.testing.pgfixtures``).

Hypothesis checks wall-clock time in two places: a per-example ``deadline``
(200 ms by default) and the ``too_slow`` health check on data generation. Both
fail a correct test when another process saturates the cores, so the profile
every test inherits turns them off; a slow parser is found by bench/, not here.
Every other Hypothesis setting (examples, randomness, shrinking) is unchanged.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

pytest_plugins = ("sentry.testing.pgfixtures",)

settings.register_profile("sentry", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("sentry")
