"""Suite-wide fixtures: a real PostgreSQL for the store tests (``sentry.testing.pgfixtures``)."""

pytest_plugins = ("sentry.testing.pgfixtures",)
