"""Configuration: defaults, the shipped file, and errors that name the key path."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentry.settings import Settings, SettingsError, load_settings, settings_from_mapping

ROOT = Path(__file__).resolve().parents[1]
POOL = {"name": "ex", "type": "exchange", "servers": ["http://127.0.0.1:1"]}


def test_defaults_are_safe() -> None:
    s = Settings()
    assert s.gateway.listen.host == "127.0.0.1" and s.gateway.listen.port == 8443
    assert s.gateway.tls.enabled
    assert s.admin.listen.host == "127.0.0.1" and s.admin.listen.port == 9090
    assert s.gateway.max_request_bytes == 50 * 1024 * 1024
    assert s.preferences.auto_block_unregistered is False
    assert s.store.kind == "sqlite"


def test_shipped_config_loads() -> None:
    s = load_settings(ROOT / "config" / "sentry.yaml")
    assert {p.name for p in s.pools} == {"exchange", "gmail"}
    assert s.demo.enabled


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"gatway": {}}, "gatway: unknown key"),
        ({"gateway": {"listen": {"port": 70000}}}, "gateway.listen.port: must be 0-65535"),
        ({"gateway": {"listen": {"port": "x"}}}, "gateway.listen.port: expected an integer"),
        ({"gateway": {"tls": {"enabled": "yes"}}}, "gateway.tls.enabled: expected true or false"),
        (
            {"gateway": {"trusted_proxies": ["nope"]}},
            "gateway.trusted_proxies[0]: not an IP network",
        ),
        (
            {"gateway": {"max_heartbeat_seconds": 5000}},
            "gateway.max_heartbeat_seconds: must be 60-3540",
        ),
        ({"pools": [{**POOL, "servers": ["ftp://x"]}]}, "pools[0].servers[0]: not an http(s) URL"),
        ({"pools": [{**POOL, "servers": []}]}, "pools[0].servers: at least one server"),
        ({"pools": [{"name": "x", "type": "y"}]}, "pools[0].servers: required key is missing"),
        ({"pools": [POOL, POOL]}, "pools[1].name: duplicate pool name"),
        ({"routing": {"default": "nope"}}, "routing.default: no pool named 'nope'"),
        ({"pools": [POOL], "routing": {"users": {"a": "zz"}}}, "routing.users.a: no pool named"),
        ({"preferences": {"refusal_style": "x"}}, "preferences.refusal_style: must be one of"),
        ({"preferences": {"max_devices_per_mailbox": 0}}, "preferences.max_devices_per_mailbox"),
        ({"store": {"kind": "oracle"}}, "store.kind: must be one of sqlite, memory"),
        ({"logging": "loud"}, "logging: expected a mapping"),
        ([1, 2], "(top level): expected a mapping"),
    ],
)
def test_bad_values_name_the_key_path(data: object, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_mapping(data)
    assert message in str(caught.value)


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("gateway: [unclosed\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings(bad)
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings(tmp_path / "missing.yaml")


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-5, 70000)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
)
_keys = st.sampled_from(
    ["gateway", "listen", "port", "host", "tls", "pools", "name", "type", "servers", "routing",
     "default", "users", "preferences", "store", "kind", "logging", "demo", "backends", "x"]
)  # fmt: skip
_docs = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=12,
)  # fmt: skip


@settings(max_examples=300)
@given(_docs)
def test_any_document_gives_settings_or_a_settings_error(doc: object) -> None:
    try:
        settings_from_mapping(doc)
    except SettingsError as exc:
        assert str(exc).startswith("<settings>: ") or "no pool named" in str(exc)
