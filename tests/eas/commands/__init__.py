"""Tests for sentry.eas.commands (a package, so module names like test_settings
cannot collide with tests of other packages)."""
