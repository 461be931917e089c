"""Settings: one YAML file, read once, validated, frozen.

Approach: each section is a frozen dataclass whose fields carry the defaults.
``load_settings`` reads YAML (safe loader) and ``_build`` walks the dataclass
fields recursively, checking every value's type and range. Any problem stops
start-up with a ``SettingsError`` naming the key path (``pools[1].servers[0]:
not an http(s) URL``); unknown keys are errors too, so a typo never passes
silently. Only this module reads configuration files; components receive their
own section. The listener sections (``gateway``, ``admin``) are defined in
``settings_gateway``, ``directory`` in ``settings_directory``; their checks
return problems this module raises, and their names are re-exported here.

Principals in the file (``routing.users`` keys) are canonicalised by the one
rule (``sentry.model.canonical_principal``) under ``identity``'s realms, and
``routing.domains`` keys are mapped to their realm, when the file is read: the
settings hold canonical keys, and two keys naming one principal (or realm) are
an error naming both key paths.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml

from sentry.dsn import dsn_problem
from sentry.model import Realm, Realms
from sentry.settings_directory import (
    DirectorySettings,
    LdapAttributeSettings,
    LdapSettings,
    ldap_problems,
)
from sentry.settings_gateway import (
    AdminSettings,
    ConnectionSettings,
    ConsoleSettings,
    GatewaySettings,
    HeaderLimitSettings,
    ListenSettings,
    RedirectSettings,
    TlsSettings,
    gateway_problems,
    positive_problems,
    workers_problems,
)

__all__ = [
    "SIGNATURE_ALGORITHMS",
    "AdminSettings",
    "BackendPoolSettings",
    "ConnectionSettings",
    "ConsoleSettings",
    "DemoBackendSettings",
    "DemoSettings",
    "DirectorySettings",
    "GatewaySettings",
    "HeaderLimitSettings",
    "HealthCheckSettings",
    "IdentitySettings",
    "LdapAttributeSettings",
    "LdapSettings",
    "ListenSettings",
    "LoggingSettings",
    "OAuthSettings",
    "PreferenceSettings",
    "RealmSettings",
    "RedirectSettings",
    "RoutingSettings",
    "Settings",
    "SettingsError",
    "StoreSettings",
    "TlsSettings",
    "load_settings",
    "settings_from_mapping",
]


class SettingsError(ValueError):
    """The configuration is invalid; the message names the key path."""


_GIVEN = "sentry.given_keys"  # field metadata: filled with the keys the file gave


@dataclass(frozen=True)
class StoreSettings:
    kind: Literal["sqlite", "memory", "postgresql"] = "sqlite"
    path: str = "var/sentry.db"  # sqlite
    touch_flush_seconds: float = 5.0
    unverified_expiry_seconds: float = 86400.0  # 0: unverified associations never expire
    check_interval_seconds: float = 2.0
    dsn: str | None = None  # postgresql: a libpq URI (postgresql://user@host:5432/db)
    password_file: str | None = None  # postgresql: the password, first line of this file
    pool_size: int = 5  # postgresql: connections in the pool
    connect_timeout_seconds: float = 5.0  # postgresql: connecting, and the health check
    command_timeout_seconds: float = 30.0  # postgresql: one statement
    feed_retention_seconds: float = 3600.0  # postgresql: change-feed rows kept this long
    feed_poll_seconds: float = 2.0  # postgresql: read the change feed this often besides NOTIFY


@dataclass(frozen=True)
class RealmSettings:
    """One realm: how its principals are written (``name``), its UPN/SMTP
    suffixes and its NetBIOS domain names."""

    name: str
    suffixes: tuple[str, ...] = ()
    netbios: tuple[str, ...] = ()


def _lower(text: str) -> str:
    return text.strip().casefold().rstrip(".")


@dataclass(frozen=True)
class HealthCheckSettings:
    interval_seconds: float = 10.0
    timeout_seconds: float = 5.0
    failures_to_down: int = 2


@dataclass(frozen=True)
class BackendPoolSettings:
    name: str
    type: str
    servers: tuple[str, ...]
    health_check: HealthCheckSettings = HealthCheckSettings()
    tls_verify: bool = True
    connect_timeout_seconds: float = 5.0
    retry_after_seconds: int = 30
    redirect_allow: tuple[str, ...] = ()  # origins this pool may redirect to (451)


@dataclass(frozen=True)
class RoutingSettings:
    default: str | None = None
    domains: Mapping[str, str] = field(default_factory=dict)
    users: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PreferenceSettings:
    auto_block_unregistered: bool = False
    max_devices_per_mailbox: int | None = None
    max_mailboxes_per_device: int | None = None
    refusal_style: Literal["status", "http403"] = "status"
    new_device_access: Literal["allow", "block"] = "allow"
    compliance_overrides_allow: bool = False
    given: frozenset[str] = field(default=frozenset(), metadata={_GIVEN: True})
    """The keys the file gave (not a key itself): a preference the file sets
    is applied at start unless an administrator set it."""


SIGNATURE_ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
)  # fmt: skip
"""The JWS algorithms OAuth tokens may use: asymmetric only (never ``none``, never HMAC)."""


@dataclass(frozen=True)
class OAuthSettings:
    """Validation of ``Authorization: Bearer`` tokens (README "Authentication")."""

    issuer: str
    audience: tuple[str, ...]
    jwks_file: str | None = None
    jwks_url: str | None = None
    jwks_refresh_seconds: float = 3600.0
    jwks_min_refresh_seconds: float = 60.0
    jwks_timeout_seconds: float = 10.0
    user_claim: str = "upn"
    algorithms: tuple[str, ...] = ("RS256",)
    leeway_seconds: float = 60.0


@dataclass(frozen=True)
class IdentitySettings:
    """Who a request is for: the realms principals are canonical under (the
    realm of bare names), and OAuth token validation (None: Bearer is refused)."""

    oauth: OAuthSettings | None = None
    realms: tuple[RealmSettings, ...] = ()
    default_realm: str | None = None  # the realm of bare names

    def to_realms(self) -> Realms:
        """The model's ``Realms`` (the settings were validated: this cannot fail)."""
        return Realms(
            tuple(
                Realm(r.name, frozenset(map(_lower, r.suffixes)), frozenset(map(_lower, r.netbios)))
                for r in self.realms
            ),
            self.default_realm,
        )


@dataclass(frozen=True)
class LoggingSettings:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"
    file: str | None = None
    access_log: bool = True
    flush_ms: int = 100  # access lines to a file wait at most this long (0: end of the turn)


@dataclass(frozen=True)
class DemoBackendSettings:
    pool: str
    port: int
    users: str  # "name:password[@domain],..."
    messages: int = 3


@dataclass(frozen=True)
class DemoSettings:
    enabled: bool = False
    min_heartbeat_seconds: int = 5
    backends: tuple[DemoBackendSettings, ...] = ()


@dataclass(frozen=True)
class Settings:
    gateway: GatewaySettings = GatewaySettings()
    admin: AdminSettings = AdminSettings()
    store: StoreSettings = StoreSettings()
    pools: tuple[BackendPoolSettings, ...] = ()
    routing: RoutingSettings = RoutingSettings()
    identity: IdentitySettings = IdentitySettings()
    directory: DirectorySettings = field(default_factory=DirectorySettings)
    preferences: PreferenceSettings = PreferenceSettings()
    logging: LoggingSettings = LoggingSettings()
    demo: DemoSettings = DemoSettings()


def load_settings(path: str | Path) -> Settings:
    """Read and validate the YAML file at ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no arbitrary objects
    except _DuplicateKey as exc:
        raise SettingsError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: not valid YAML: {exc}") from None
    return settings_from_mapping({} if data is None else data, source=str(path))


class _DuplicateKey(yaml.YAMLError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """The safe loader, refusing a key given twice in one mapping (YAML would
    silently keep the last one: a typo that changes a setting unseen)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise _DuplicateKey(f"line {line}: key {key!r} is given twice")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def settings_from_mapping(data: Any, source: str = "<settings>") -> Settings:
    """Validate an already-parsed mapping (the YAML document)."""
    try:
        settings: Settings = _build(Settings, data, "")
        _check_references(settings)
        for where, problem in workers_problems(settings):
            raise SettingsError(f"{where}: {problem}")
        settings = settings_identity.canonical_routing(settings)
    except SettingsError as exc:
        raise SettingsError(f"{source}: {exc}") from None
    return settings


def _where(path: str) -> str:
    return path or "(top level)"


def _build(cls: type[Any], data: Any, path: str) -> Any:
    if not isinstance(data, Mapping):
        raise SettingsError(f"{_where(path)}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    known = {f.name: f for f in fields if not f.metadata.get(_GIVEN)}
    unknown = sorted(set(map(str, data)) - set(known))
    if unknown:
        raise SettingsError(f"{_join(path, unknown[0])}: unknown key")
    kwargs: dict[str, Any] = {
        f.name: frozenset(map(str, data)) for f in fields if f.metadata.get(_GIVEN)
    }
    for name, f in known.items():
        if name in data:
            kwargs[name] = _value(hints[name], data[name], _join(path, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise SettingsError(f"{_join(path, name)}: required key is missing")
    obj = cls(**kwargs)
    _validate(obj, path)
    return obj


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _value(hint: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _value(inner, value, path)
    if origin is Literal:
        if value not in args:
            raise SettingsError(f"{path}: must be one of {', '.join(map(str, args))}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise SettingsError(f"{path}: expected a list")
        return tuple(_value(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin in (Mapping, dict) or hint is Mapping:
        if not isinstance(value, Mapping):
            raise SettingsError(f"{path}: expected a mapping")
        return {str(k): _value(args[1], v, _join(path, str(k))) for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)  # type: ignore[arg-type]
    return _scalar(hint, value, path)


def _scalar(hint: Any, value: Any, path: str) -> Any:
    if hint is bool:
        if not isinstance(value, bool):
            raise SettingsError(f"{path}: expected true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(f"{path}: expected an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SettingsError(f"{path}: expected a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str) or not value:
            raise SettingsError(f"{path}: expected a non-empty string")
        return value
    raise SettingsError(f"{path}: unsupported setting type {hint!r}")  # pragma: no cover


def _positive(path: str, value: float | None, *, allow_zero: bool = False) -> None:
    for where, problem in positive_problems(path, value, allow_zero=allow_zero):
        raise SettingsError(f"{where}: {problem}")


def _validate(obj: Any, path: str) -> None:
    """Range and format checks that types alone cannot express."""
    for where, problem in gateway_problems(obj, path):
        raise SettingsError(f"{where}: {problem}")
    if isinstance(obj, BackendPoolSettings):
        _validate_pool(obj, path)
    if isinstance(obj, PreferenceSettings):
        _positive(_join(path, "max_devices_per_mailbox"), obj.max_devices_per_mailbox)
        _positive(_join(path, "max_mailboxes_per_device"), obj.max_mailboxes_per_device)
    if isinstance(obj, HealthCheckSettings):
        _positive(_join(path, "interval_seconds"), obj.interval_seconds)
        _positive(_join(path, "timeout_seconds"), obj.timeout_seconds)
        _positive(_join(path, "failures_to_down"), obj.failures_to_down)
    if isinstance(obj, StoreSettings):
        _validate_store(obj, path)
    if isinstance(obj, LoggingSettings) and not 0 <= obj.flush_ms <= 10_000:
        raise SettingsError(f"{_join(path, 'flush_ms')}: must be 0-10000 (milliseconds)")
    if isinstance(obj, RealmSettings):
        settings_identity.validate_realm(obj, path)
    if isinstance(obj, IdentitySettings):
        settings_identity.validate_identity(obj, path)
    if isinstance(obj, OAuthSettings):
        _validate_oauth(obj, path)
    if isinstance(obj, LdapSettings):
        for where, problem in ldap_problems(obj, path):
            raise SettingsError(f"{where}: {problem}")


def _validate_store(s: StoreSettings, path: str) -> None:
    _positive(_join(path, "touch_flush_seconds"), s.touch_flush_seconds)
    _positive(
        _join(path, "unverified_expiry_seconds"), s.unverified_expiry_seconds, allow_zero=True
    )
    _positive(_join(path, "check_interval_seconds"), s.check_interval_seconds)
    for key in (
        "connect_timeout_seconds",
        "command_timeout_seconds",
        "feed_retention_seconds",
        "feed_poll_seconds",
    ):
        _positive(_join(path, key), getattr(s, key))
    if not 1 <= s.pool_size <= 100:
        raise SettingsError(f"{_join(path, 'pool_size')}: must be 1-100")
    if s.kind != "postgresql":
        for key in ("dsn", "password_file"):
            if getattr(s, key) is not None:
                raise SettingsError(f"{_join(path, key)}: only used with kind: postgresql")
        return
    if s.dsn is None:
        raise SettingsError(f"{_join(path, 'dsn')}: required with kind: postgresql")
    problem = dsn_problem(s.dsn)  # never repeats the URI: it may hold a password
    if problem is not None:
        raise SettingsError(f"{_join(path, 'dsn')}: {problem}")


def _validate_pool(p: BackendPoolSettings, path: str) -> None:
    if not p.servers:
        raise SettingsError(f"{_join(path, 'servers')}: at least one server is required")
    for i, url in enumerate(p.servers):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SettingsError(f"{_join(path, 'servers')}[{i}]: not an http(s) URL: {url!r}")
    _positive(_join(path, "retry_after_seconds"), p.retry_after_seconds)
    for i, url in enumerate(p.redirect_allow):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problem = f"not an http(s) URL: {url!r}"
        elif parts.path.rstrip("/").lower() not in ("", "/microsoft-server-activesync"):
            problem = "only scheme://host[:port] (the ActiveSync path is implied)"
        elif parts.query or parts.fragment or parts.username or parts.password:
            problem = "no query, fragment or credentials"
        else:
            continue
        raise SettingsError(f"{_join(path, 'redirect_allow')}[{i}]: {problem}")


_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def _validate_oauth(o: OAuthSettings, path: str) -> None:
    if not o.audience:
        raise SettingsError(f"{_join(path, 'audience')}: at least one audience is required")
    if (o.jwks_file is None) == (o.jwks_url is None):
        raise SettingsError(f"{_join(path, 'jwks_file')}: give exactly one of jwks_file, jwks_url")
    if o.jwks_url is not None:
        parts = urlsplit(o.jwks_url)
        loopback = parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS
        if not parts.hostname or not (parts.scheme == "https" or loopback):
            problem = "must be an https URL (plain http only on loopback, for tests)"
            raise SettingsError(f"{_join(path, 'jwks_url')}: {problem}")
    if not o.algorithms:
        raise SettingsError(f"{_join(path, 'algorithms')}: at least one algorithm is required")
    for i, alg in enumerate(o.algorithms):
        if alg not in SIGNATURE_ALGORITHMS:
            allowed = ", ".join(SIGNATURE_ALGORITHMS)
            problem = f"{alg!r} is not allowed (asymmetric signatures only: {allowed})"
            raise SettingsError(f"{_join(path, 'algorithms')}[{i}]: {problem}")
    _positive(_join(path, "jwks_refresh_seconds"), o.jwks_refresh_seconds)
    _positive(_join(path, "jwks_min_refresh_seconds"), o.jwks_min_refresh_seconds, allow_zero=True)
    _positive(_join(path, "jwks_timeout_seconds"), o.jwks_timeout_seconds)
    if not 0 <= o.leeway_seconds <= 600:
        raise SettingsError(f"{_join(path, 'leeway_seconds')}: must be 0-600")


def _check_references(s: Settings) -> None:
    """Pool names are unique and every route names a configured pool."""
    names: set[str] = set()
    for i, pool in enumerate(s.pools):
        if pool.name in names:
            raise SettingsError(f"pools[{i}].name: duplicate pool name {pool.name!r}")
        names.add(pool.name)
    routes = [("routing.default", s.routing.default)]
    routes += [(f"routing.domains.{d}", p) for d, p in s.routing.domains.items()]
    routes += [(f"routing.users.{u}", p) for u, p in s.routing.users.items()]
    routes += [(f"demo.backends[{i}].pool", b.pool) for i, b in enumerate(s.demo.backends)]
    for where, pool_name in routes:
        if pool_name is not None and pool_name not in names:
            raise SettingsError(f"{where}: no pool named {pool_name!r}")


from sentry import settings_identity  # noqa: E402  (it uses SettingsError, defined above)
