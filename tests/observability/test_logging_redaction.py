"""The redaction processor: credentials never reach a log line."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentry.observability import logging as logging_module
from sentry.observability.logging import REDACTED, redact_secrets, redact_text


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


# The pre-check that skips most values: its ASCII fast path (lower, then a
# substring search per hint word) must say exactly what the case-insensitive
# regex says, and text that only Unicode case folding links to a hint word
# ("pa\\u017fsword" with the long s, which folds to "s") must still be masked.
_HINT_TEXT = st.text(
    alphabet=st.sampled_from("aAbBcCdDeEgGiIkKnNoOpPrRsStTuUwWzZ=: \u017f\u212a\u0130\u0131\u00e9"),
    max_size=40,
)


@given(st.one_of(_HINT_TEXT, st.text(max_size=40)))
def test_the_fast_pre_check_agrees_with_the_regex(value: str) -> None:
    assert logging_module._hinted(value) is (logging_module._HINT.search(value) is not None)


@pytest.mark.parametrize(
    "text",
    [
        "password=hunter2",
        "PASSWORD=hunter2",
        "pa\u017fsword=hunter2",
        "api\u212aey=hunter2",
        "x" * 300 + " token=hunter2",
    ],
)
def test_folded_and_long_values_are_masked(text: str) -> None:
    assert "hunter2" not in redact_text(text)
    assert "hunter2" not in redact_text(text)  # and again, from the cache of short values


def test_the_cache_of_short_values_never_holds_a_credential() -> None:
    text = "Authorization: Basic c2VjcmV0LWluLWNhY2hl"
    assert "c2VjcmV0LWluLWNhY2hl" not in redact_text(text)
    assert redact_text("Ping") == "Ping"
    assert "Ping" in logging_module._CLEAN
    assert not any("c2VjcmV0LWluLWNhY2hl" in v for v in logging_module._CLEAN)
