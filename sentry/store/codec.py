"""JSON and row codecs between model values and what a database stores.

Approach. Registry and configuration values (users, devices, pools,
settings, labels, routing, preferences, overrides) are small and rare: they
are stored as JSON text and rebuilt with explicit decoders, so adding an
optional field never needs a migration. Associations are many (a million
must load in seconds), so they are flat columns instead (see ``sqlite.py``);
their reason and violation sets are JSON arrays, parsed once per distinct
text and shared, like every low-cardinality string (``Interner``).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from sentry.model import (
    AccessRule,
    AccessRules,
    AssociationKey,
    Device,
    EasPolicy,
    EstablishedType,
    ExchangeSetting,
    Label,
    NewDeviceAccess,
    Override,
    OverrideKind,
    Platform,
    PolicyAssignments,
    Pool,
    Preferences,
    ProvisionRecord,
    Realm,
    Realms,
    Reason,
    RefusalStyle,
    Routing,
    User,
    UserSource,
    Violation,
    ViolationKind,
    violation_from_text,
)
from sentry.policy.audit import plain
from sentry.slots import fast_constructor

__all__ = [
    "DECODERS",
    "GC_THRESHOLDS",
    "Interner",
    "compact",
    "decode_override",
    "dumps",
    "encode_override",
    "encode_set",
    "gc_paused",
]

T = TypeVar("T")


# ``json.dumps`` with any option builds a new encoder per call; a bulk action
# encodes thousands of small documents, so the two forms are built once.
_COMPACT = json.JSONEncoder(separators=(",", ":")).encode
_SORTED = json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode


_SCALARS = frozenset({str, int, float, bool, type(None)})


def dumps(value: Any) -> str:
    """Compact, key-sorted JSON of a model value (via ``policy.audit.plain``)."""
    return _SORTED(value if _json_ready(value) else plain(value))


def compact(value: Any) -> str:
    """Compact JSON of a model value, keys in their order (history details)."""
    return _COMPACT(value if _json_ready(value) else plain(value))


def _json_ready(value: Any) -> bool:
    """Whether ``plain(value)`` would only copy ``value``: a dict of ``str``
    keys whose values are scalars of the exact JSON types or lists of them
    (the history details and audit summaries an admin action writes by the
    thousand). Exact types: a ``StrEnum`` is a ``str`` but not plain."""
    if type(value) is not dict:
        return False
    scalars = _SCALARS
    for key, item in value.items():
        if type(key) is not str:
            return False
        kind = type(item)
        if kind in scalars:
            continue
        if kind is not list:
            return False
        for element in item:
            if type(element) not in scalars:
                return False
    return True


def encode_set(values: frozenset[Any]) -> str | None:
    """A set as a sorted JSON array; NULL for the (usual) empty set."""
    if not values:
        return None
    return _encode_set(values)


# Few distinct sets (a bulk Block gives a thousand rows {MANUAL}): cached.
@functools.lru_cache(maxsize=1024)
def _encode_set(values: frozenset[Any]) -> str:
    return _COMPACT(sorted(plain(v) for v in values))


def encode_override(override: Override | None) -> str | None:
    return None if override is None else _encode_override(override)


# A bulk action gives a thousand rows one equal Override (same kind, note,
# actor, time): encoded once and decoded once, not a thousand times each.
@functools.lru_cache(maxsize=1024)
def _encode_override(override: Override) -> str:
    return dumps(override)


def decode_override(text: str | None) -> Override | None:
    if text is None:
        return None
    return _decode_override(text)


@functools.lru_cache(maxsize=1024)
def _decode_override(text: str) -> Override:
    d = json.loads(text)
    return Override(
        OverrideKind(d["kind"]),
        d["note"],
        d["actor"],
        d["at"],
        d["account_only"],
        d.get("pre_approved", False),  # absent in rows written before it existed
    )


_SOURCES = {s.value: s for s in UserSource}
_PLATFORMS = {p.value: p for p in Platform}
_new_device = fast_constructor(Device)  # devices may number 100k+: skip re-validation


def _user(d: Mapping[str, Any]) -> User:
    aliases = frozenset(d.get("aliases", ()))  # written before aliases existed: none
    return User(**{**d, "source": _SOURCES[d["source"]], "aliases": aliases})


def _device(d: Mapping[str, Any]) -> Device:
    return _new_device(
        d["id"],
        d["owner"],
        _PLATFORMS[d["platform"]],
        frozenset(d["eas_ids"]),
        d["compliant"],
        frozenset(map(_violation, d["violations"])),
        frozenset(d["labels"]),
        d["retired"],
    )


_KINDS = {k.value: k for k in ViolationKind}


def _violation(item: Any) -> Violation:
    """``{"kind", "detail"}``; a plain string is free text from before the
    vocabulary (migration 5 rewrites those; read them the same way here)."""
    if isinstance(item, str):
        return violation_from_text(item)
    return Violation(_KINDS[item["kind"]], item.get("detail", ""))


def _pool(d: Mapping[str, Any]) -> Pool:
    return Pool(d["name"], d["type"], tuple(d["servers"]))


def _label(d: Mapping[str, Any]) -> Label:
    return Label(d["name"], frozenset(d["settings"]), frozenset(d["devices"]))


def _routing(d: Mapping[str, Any]) -> Routing:
    return Routing(dict(d["users"]), dict(d["domains"]), d["default"])


def _prefs(d: Mapping[str, Any]) -> Preferences:
    return Preferences(
        auto_block_unregistered=d["auto_block_unregistered"],
        max_devices_per_mailbox=d["max_devices_per_mailbox"],
        max_mailboxes_per_device=d["max_mailboxes_per_device"],
        refusal_style=RefusalStyle(d["refusal_style"]),
        new_device_access_when_registry_unreachable=NewDeviceAccess(
            d["new_device_access_when_registry_unreachable"]
        ),
        compliance_overrides_allow=d.get("compliance_overrides_allow", False),
        admin_set=frozenset(d.get("admin_set", ())),  # migration 2 writes it for old rows
    )


def _realms(d: Mapping[str, Any]) -> Realms:
    realms = tuple(
        Realm(r["name"], frozenset(r["suffixes"]), frozenset(r["netbios"])) for r in d["realms"]
    )
    return Realms(realms, d["default"])


def _access_rules(d: Mapping[str, Any]) -> AccessRules:
    return AccessRules(tuple(AccessRule(**r) for r in d["rules"]))


def _established(d: Mapping[str, Any]) -> EstablishedType:
    key = None if d["key"] is None else AssociationKey(*d["key"])
    return EstablishedType(d["scope"], d["backend_type"], d["at"], key, d["actor"], d["note"])


def _eas_policy(d: Mapping[str, Any]) -> EasPolicy:
    settings = tuple((str(name), int(value)) for name, value in d["settings"])
    return EasPolicy(d["name"], settings, d["description"], d["allow_non_provisionable"])


def _assignments(d: Mapping[str, Any]) -> PolicyAssignments:
    return PolicyAssignments(
        d["default"], dict(d["users"]), dict(d["labels"]), dict(d["associations"])
    )


def _provision(d: Mapping[str, Any]) -> ProvisionRecord:
    return ProvisionRecord(
        AssociationKey(*d["key"]),
        d["policy"],
        d["digest"],
        d["at"],
        d["pending"],
        d["issued"],
        d["backend_key"],
    )


DECODERS: Mapping[type[Any], Callable[[Mapping[str, Any]], Any]] = {
    User: _user,
    Device: _device,
    Pool: _pool,
    ExchangeSetting: lambda d: ExchangeSetting(**d),
    Label: _label,
    Routing: _routing,
    Preferences: _prefs,
    Realms: _realms,
    EstablishedType: _established,
    EasPolicy: _eas_policy,
    PolicyAssignments: _assignments,
    ProvisionRecord: _provision,
    AccessRules: _access_rules,
}
"""Model type -> decoder of its ``dumps`` JSON (already parsed)."""


class _Parsed(dict[str | None, frozenset[Any]]):
    """JSON array text -> frozenset, parsed on first sight (``d[text]`` stays C-fast)."""

    def __init__(self, item: Callable[[Any], Any]) -> None:
        super().__init__({None: frozenset()})
        self._item = item

    def __missing__(self, text: str | None) -> frozenset[Any]:
        value = self[text] = frozenset(self._item(v) for v in json.loads(text or "[]"))
        return value


class Interner:
    """Shares equal values across a million rows: one object per distinct value.

    ``share(s, s)`` is the shared copy of a low-cardinality string (None stays
    None); ``reasons[text]`` and ``violations[text]`` parse a JSON array once
    per distinct text; ``None`` (the empty set) is mapped to ``frozenset()``.
    """

    def __init__(self) -> None:
        self._strings: dict[str | None, str | None] = {}
        self.share = self._strings.setdefault
        self.reasons: Mapping[str | None, frozenset[Reason]] = _Parsed(Reason)
        self.violations: Mapping[str | None, frozenset[str]] = _Parsed(str)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic GC while millions of objects are created (it would traverse
    them again and again), then ``gc.freeze()``: the loaded state lives as long
    as the process, so later collections skip it (refcounting still frees
    whatever is dropped). The previous GC state is restored, with the
    young generation's threshold raised (``GC_THRESHOLDS``)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        if enabled:
            gc.enable()


GC_THRESHOLDS = (50_000, 20, 10)
"""The collector's thresholds once the state is loaded (Python's are 700, 10,
10). A bulk action over 1,000 rows allocates some 100,000 objects: with the
default thresholds that is about 80 collections, one of them a full one that
walks every object created since the load (100 ms with 200,000 of them, the
state of some thousand held requests), in the middle of the action. A young
generation of 50,000 makes it none or one, each a few milliseconds; the
cyclic garbage a request leaves (aiohttp's protocol and transport refer to
each other) waits at most that many allocations."""
