"""Configuration: defaults, the shipped file, and errors that name the key path."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentry.settings import Settings, SettingsError, load_settings, settings_from_mapping

ROOT = Path(__file__).resolve().parents[1]
POOL = {"name": "ex", "type": "exchange", "servers": ["http://127.0.0.1:1"]}
OAUTH = {"issuer": "https://login.example/t/v2.0", "audience": ["a"], "jwks_file": "k.json"}
OAUTH_URL = {"issuer": "https://login.example/t/v2.0", "audience": ["a"]}


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
        ({"logging": {"flush_ms": -1}}, "logging.flush_ms: must be 0-10000 (milliseconds)"),
        ({"logging": {"flush_ms": 10_001}}, "logging.flush_ms: must be 0-10000"),
        ({"logging": {"flush_ms": 0.5}}, "logging.flush_ms: expected an integer"),
        ({"logging": {"flush_ms": True}}, "logging.flush_ms: expected an integer"),
        ({"gateway": {"redirects": {"max_hops": 0}}}, "gateway.redirects.max_hops: must be 1-10"),
        ({"gateway": {"connections": {"max": 0}}}, "gateway.connections.max: must be > 0"),
        (
            {"gateway": {"connections": {"header_timeout_seconds": 0}}},
            "gateway.connections.header_timeout_seconds: must be > 0",
        ),
        (
            {"gateway": {"connections": {"body_min_bytes_per_second": -1}}},
            "gateway.connections.body_min_bytes_per_second: must be ≥ 0",
        ),
        ({"gateway": {"connections": {"idle": 5}}}, "gateway.connections.idle: unknown key"),
        (
            {"gateway": {"header_limits": {"field_bytes": 100}}},
            "gateway.header_limits.field_bytes: must be 256-262144",
        ),
        (
            {"gateway": {"header_limits": {"request_line_bytes": 10**6}}},
            "gateway.header_limits.request_line_bytes: must be 64-65536",
        ),
        (
            {"gateway": {"header_limits": {"fields": 2}}},
            "gateway.header_limits.fields: must be 8-1000",
        ),
        (
            {"pools": [{**POOL, "redirect_allow": ["ftp://x"]}]},
            "pools[0].redirect_allow[0]: not an http(s) URL",
        ),
        (
            {"pools": [{**POOL, "redirect_allow": ["https://x.example/owa"]}]},
            "pools[0].redirect_allow[0]: only scheme://host[:port]",
        ),
        ({"identity": {"oauth": {"audience": ["a"]}}}, "identity.oauth.issuer: required key"),
        ({"identity": {"oauth": {**OAUTH, "audience": []}}}, "identity.oauth.audience: at least"),
        (
            {"identity": {"oauth": {**OAUTH, "jwks_url": "https://k.example/keys"}}},
            "identity.oauth.jwks_file: give exactly one of jwks_file, jwks_url",
        ),
        (
            {"identity": {"oauth": {**OAUTH, "algorithms": ["HS256"]}}},
            "identity.oauth.algorithms[0]: 'HS256' is not allowed",
        ),
        (
            {"identity": {"oauth": {**OAUTH, "algorithms": ["RS256", "none"]}}},
            "identity.oauth.algorithms[1]: 'none' is not allowed",
        ),
        (
            {"identity": {"oauth": {**OAUTH_URL, "jwks_url": "http://idp.example/keys"}}},
            "identity.oauth.jwks_url: must be an https URL",
        ),
        ({"identity": {"oauth": {**OAUTH, "leeway_seconds": -1}}}, "identity.oauth.leeway"),
        ([1, 2], "(top level): expected a mapping"),
    ],
)
def test_bad_values_name_the_key_path(data: object, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_mapping(data)
    assert message in str(caught.value)


def test_oauth_and_redirect_settings() -> None:
    s = settings_from_mapping(
        {
            "identity": {"oauth": {**OAUTH_URL, "jwks_url": "https://login.example/keys"}},
            "gateway": {"redirects": {"max_hops": 3}},
            "pools": [{**POOL, "redirect_allow": ["https://dr.example:8443"]}],
        }
    )
    oauth = s.identity.oauth
    assert oauth is not None and oauth.user_claim == "upn" and oauth.algorithms == ("RS256",)
    assert s.gateway.redirects.max_hops == 3 and s.pools[0].redirect_allow == (
        "https://dr.example:8443",
    )
    assert Settings().identity.oauth is None  # Bearer is refused until configured
    loopback = {**OAUTH_URL, "jwks_url": "http://127.0.0.1:8080/keys"}  # tests only
    assert settings_from_mapping({"identity": {"oauth": loopback}}).identity.oauth is not None


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("gateway: [unclosed\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings(bad)
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings(tmp_path / "missing.yaml")


def test_a_key_given_twice_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "twice.yaml"
    path.write_text("gateway:\n  fqdn: a.example\n  listen: {port: 1}\n  fqdn: b.example\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(path)
    assert str(caught.value) == f"{path}: line 4: key 'fqdn' is given twice"
    path.write_text("admin: {tls: {enabled: true}}\n")
    loaded = load_settings(path).admin.tls
    assert loaded.enabled and loaded.cert == "certs/sentry.pem"  # the device listener's files


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


# --- identity.realms and the canonical routing keys ---

REALMS = {
    "realms": [
        {"name": "example.com", "suffixes": ["Corp.Example.com"], "netbios": ["CORP"]},
        {"name": "gmail.example"},
    ],
    "default_realm": "example.com",
}
POOLS = [
    {"name": "exchange", "type": "exchange", "servers": ["http://a"]},
    {"name": "gmail", "type": "gmail", "servers": ["http://b"]},
]


def test_realms_and_canonical_routing_keys() -> None:
    s = settings_from_mapping(
        {
            "identity": REALMS,
            "pools": POOLS,
            "routing": {
                "users": {"CORP\\Vip": "gmail", "carol@Gmail.Example": "gmail"},
                "domains": {"CORP": "exchange", "gmail.example": "gmail", "Other.Example": "gmail"},
            },
        }
    )
    realms = s.identity.to_realms()
    assert realms.default == "example.com" and realms.by_suffix("corp.example.com") == "example.com"
    assert s.routing.users == {"vip@example.com": "gmail", "carol@gmail.example": "gmail"}
    assert s.routing.domains == {
        "example.com": "exchange",
        "gmail.example": "gmail",
        "other.example": "gmail",
    }
    assert s.store.unverified_expiry_seconds == 86400.0


def test_without_realms_routing_keys_stay_as_written_but_lower_case() -> None:
    s = settings_from_mapping({"pools": POOLS, "routing": {"users": {"CORP\\Vip": "gmail"}}})
    assert s.routing.users == {"corp\\vip": "gmail"}


@pytest.mark.parametrize(
    ("identity", "routing", "message"),
    [
        (REALMS, {"users": {"CORP\\john": "gmail", "john": "exchange"}}, "routing.users.john: "),
        (REALMS, {"users": {"CORP\\": "gmail"}}, "routing.users.CORP\\: names no principal"),
        (REALMS, {"domains": {"corp": "gmail", "example.com": "exchange"}}, "routing.domains."),
        ({"realms": [{"name": "Example.com"}]}, {}, "identity.realms[0].name: 'Example.com'"),
        ({"realms": [{"name": "a", "suffixes": ["b c"]}]}, {}, "identity.realms[0].suffixes[0]"),
        ({"realms": [{"name": "a", "netbios": ["C.D"]}]}, {}, "identity.realms[0].netbios[0]"),
        (
            {"realms": [{"name": "a", "suffixes": ["x.example"]}, {"name": "x.example"}]},
            {},
            "identity.realms[1].name: 'x.example' already names realm 'a'",
        ),
        (
            {"realms": [{"name": "a", "netbios": ["CORP"]}, {"name": "b", "netbios": ["corp"]}]},
            {},
            "identity.realms[1].netbios[0]",
        ),
        ({"realms": [{"name": "a"}, {"name": "a"}]}, {}, "identity.realms[1].name: duplicate"),
        ({"realms": [{"name": "a"}], "default_realm": "b"}, {}, "identity.default_realm: no realm"),
    ],
)
def test_bad_identity_settings_name_the_key_path(
    identity: dict[str, object], routing: dict[str, object], message: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_mapping({"identity": identity, "pools": POOLS, "routing": routing})
    assert message in str(caught.value)


def test_unverified_expiry_may_be_zero_but_not_negative() -> None:
    assert settings_from_mapping({"store": {"unverified_expiry_seconds": 0}}).store
    with pytest.raises(SettingsError, match=r"store\.unverified_expiry_seconds"):
        settings_from_mapping({"store": {"unverified_expiry_seconds": -1}})


PG = "postgresql://sentry@db.example:5432/sentry"


@pytest.mark.parametrize(
    ("store", "message"),
    [
        ({"kind": "postgresql"}, r"^<settings>: store\.dsn: required with kind: postgresql$"),
        ({"dsn": PG}, r"^<settings>: store\.dsn: only used with kind: postgresql$"),
        ({"password_file": "pw"}, r"store\.password_file: only used with kind: postgresql"),
        ({"kind": "postgresql", "dsn": "host=db dbname=x"}, r"store\.dsn: must be a URI"),
        ({"kind": "postgresql", "dsn": "mysql://db/x"}, r"store\.dsn: must be a URI"),
        ({"kind": "postgresql", "dsn": PG, "pool_size": 0}, r"store\.pool_size: must be 1-100"),
        (
            {"kind": "postgresql", "dsn": PG, "connect_timeout_seconds": 0},
            r"store\.connect_timeout_seconds: must be > 0",
        ),
        (
            {"kind": "postgresql", "dsn": PG, "feed_retention_seconds": -1},
            r"store\.feed_retention_seconds: must be > 0",
        ),
    ],
)
def test_postgresql_store_settings_name_the_key(store: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        settings_from_mapping({"store": store})


def test_a_bad_dsn_is_reported_without_its_password() -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_mapping(
            {"store": {"kind": "postgresql", "dsn": "postgresql://u:hunter2@db:99999/x"}}
        )
    assert "store.dsn" in str(caught.value) and "hunter2" not in str(caught.value)


def test_postgresql_store_settings() -> None:
    store = settings_from_mapping(
        {"store": {"kind": "postgresql", "dsn": PG, "password_file": "pw", "pool_size": 3}}
    ).store
    assert (store.kind, store.dsn, store.password_file, store.pool_size) == (
        "postgresql",
        PG,
        "pw",
        3,
    )
    assert store.feed_retention_seconds == 3600


NO_CONSOLE = {"console": {"enabled": False}}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"gateway": {"workers": 0}}, r"gateway\.workers: must be 1-64$"),
        ({"gateway": {"workers": 65}}, r"gateway\.workers: must be 1-64$"),
        (
            {"gateway": {"workers": 2}},
            r"gateway\.workers: must be 1 with store\.kind: sqlite \(a SQLite file is owned by "
            r"one process\); several workers share their state through store\.kind: postgresql",
        ),
        (
            {"gateway": {"workers": 2}, "store": {"kind": "memory"}},
            r"gateway\.workers: must be 1 with store\.kind: memory",
        ),
        (
            {"gateway": {"workers": 2}, "store": {"kind": "postgresql", "dsn": PG}},
            r"admin\.console\.enabled: must be false with gateway\.workers > 1",
        ),
        (
            {
                "gateway": {"workers": 2},
                "store": {"kind": "postgresql", "dsn": PG},
                "admin": NO_CONSOLE,
                "demo": {"enabled": True},
            },
            r"demo\.enabled: must be false with gateway\.workers > 1",
        ),
    ],
)
def test_workers_need_a_shared_store_and_name_the_key(
    data: dict[str, object], message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        settings_from_mapping(data)


def test_workers_with_postgresql() -> None:
    data = {"gateway": {"workers": 4}, "store": {"kind": "postgresql", "dsn": PG}}
    assert settings_from_mapping({**data, "admin": NO_CONSOLE}).gateway.workers == 4
    assert settings_from_mapping({}).gateway.workers == 1
