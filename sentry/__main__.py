"""``python -m sentry``: the same command line as the ``sentry`` script."""

from sentry.cli import main

raise SystemExit(main())
