"""The redaction processor: credentials never reach a log line."""

from __future__ import annotations

from sentry.observability.logging import REDACTED, redact_secrets


def test_secret_keys_and_embedded_credentials_are_redacted() -> None:
    event = {
        "event": "request",
        "Authorization": "Basic YWxpY2U6c2VjcmV0",
        "password": "hunter2",
        "headers": {"X-Api-Key": "k", "Cookie": "s=1", "Accept": "*/*"},
        "note": "client sent bearer eyJhbGciOi.abc and BASIC Zm9vOmJhcg==",
        "items": ["Basic Zm9vOmJhcg==", {"token": "t"}],
        "count": 3,
    }
    out = redact_secrets(None, "info", dict(event))
    assert out["Authorization"] == REDACTED and out["password"] == REDACTED
    assert out["headers"] == {"X-Api-Key": REDACTED, "Cookie": REDACTED, "Accept": "*/*"}
    assert "eyJhbGciOi" not in out["note"] and "Zm9vOmJhcg" not in out["note"]
    assert out["items"] == [f"Basic {REDACTED}", {"token": REDACTED}]
    assert out["count"] == 3 and out["event"] == "request"
