"""Settings of the web console and the read-only token (``admin.console``,
``admin.readonly_token_file``)."""

from __future__ import annotations

import pytest

from sentry.settings import Settings, SettingsError, settings_from_mapping


def test_console_defaults() -> None:
    admin = Settings().admin
    assert admin.console.enabled is True
    assert admin.console.session_idle_seconds == 1800
    assert admin.console.session_max_seconds == 43200
    assert admin.console.max_sessions == 1000
    assert admin.readonly_token_file is None


def test_console_and_readonly_values() -> None:
    s = settings_from_mapping(
        {
            "admin": {
                "readonly_token_file": "var/readonly-token",
                "console": {"enabled": False, "session_idle_seconds": 300, "max_sessions": 5},
            }
        }
    )
    assert s.admin.readonly_token_file == "var/readonly-token"
    assert s.admin.console.enabled is False and s.admin.console.session_idle_seconds == 300
    assert s.admin.console.max_sessions == 5


@pytest.mark.parametrize(
    ("admin", "message"),
    [
        (
            {"console": {"session_idle_seconds": 0}},
            "admin.console.session_idle_seconds: must be > 0",
        ),
        (
            {"console": {"session_max_seconds": -5}},
            "admin.console.session_max_seconds: must be > 0",
        ),
        ({"console": {"max_sessions": 0}}, "admin.console.max_sessions: must be > 0"),
        ({"console": {"enable": True}}, "admin.console.enable: unknown key"),
        ({"readonly_token_file": ""}, "admin.readonly_token_file: expected a non-empty string"),
        ({"readonly_token_file": "  "}, "admin.readonly_token_file: must not be empty"),
        (
            {"token_file": "var/t", "readonly_token_file": "var/t"},
            "admin.readonly_token_file: must not be admin.token_file",
        ),
        ({"readonly_token_file": "var/admin-token"}, "must not be admin.token_file"),
    ],
)
def test_bad_console_values_name_the_key_path(admin: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_mapping({"admin": admin})
    assert message in str(caught.value)
