"""Registry and configuration operations: devices, compliance, users, settings.

Approach. Like the association actions in ``admin.py``, each function checks
its input against the snapshot and returns changes plus an audit entry; a
call that changes nothing returns no changes. These operations change facts
that many rows depend on (a device's compliance, a user's attributes, a
label), so they do not rewrite rows themselves: after applying, the shell
takes ``affected_keys`` of the changes, calls ``evaluate`` on them to end held
long polls that lost access, and ``refresh`` to record the new decisions.
``actor`` is required (``"registry"`` for an EPMM/LDAP sync); ``note`` is
optional here.

Every principal given here (a user, a device owner, a routing key) goes
through the one rule under the snapshot's realms (``Snapshot.canonical``).
A user's known names (email, aliases) must not name another user: such a
write is a ``ConflictError`` (409); rows already keyed under a name that
becomes the user's are re-keyed onto the user (``rekey.rekey_rows``). A
device's registration keeps one established backend type across its
DeviceIds (``established.device_changes``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields, replace

from sentry.model import (
    THROWAWAY_DEVICE_IDS,
    Device,
    ExchangeSetting,
    Label,
    Pool,
    Preferences,
    Realms,
    Routing,
    User,
    Violation,
    canonical_device_id,
    canonical_principal,
    violation_from_text,
)

from .audit import audited_change as _put
from .changes import (
    Changes,
    DeleteLabel,
    DeleteSetting,
    PutDevice,
    PutLabel,
    PutPool,
    PutPreferences,
    PutRouting,
    PutSetting,
    PutUser,
)
from .errors import ConflictError, NotFoundError, ValidationError
from .established import device_changes
from .indexes import known_names
from .rekey import rekey_rows
from .snapshot import Snapshot

__all__ = [
    "canonical_routing",
    "delete_label",
    "delete_setting",
    "put_label",
    "put_pool",
    "put_setting",
    "register_device",
    "retire_device",
    "set_compliance",
    "set_preferences",
    "set_routing",
    "upsert_user",
]


def register_device(
    snapshot: Snapshot, device: Device, *, actor: str, now: float, note: str = ""
) -> Changes:
    """Register (or update) a managed device; its EAS DeviceIds are canonicalised.

    ``ValidationError`` when a DeviceId already belongs to another live device.
    """
    device = _checked_device(snapshot, device)
    old = snapshot.devices.get(device.id)
    return _put_device(snapshot, old, device, "register_device", actor, note, now)


def _put_device(
    snapshot: Snapshot,
    old: Device | None,
    new: Device,
    action: str,
    actor: str,
    note: str,
    now: float,
) -> Changes:
    changes = _put(PutDevice(new), action, f"device:{new.id}", old, new, actor, note, now)
    return (*changes, *device_changes(snapshot, old, new)) if changes else ()


def _checked_device(snapshot: Snapshot, device: Device) -> Device:
    owner = snapshot.canonical(device.owner)
    if not device.id.strip() or not owner:
        raise ValidationError("a device needs an id and an owner")
    eas_ids = frozenset(canonical_device_id(i) for i in device.eas_ids if i.strip())
    shared = sorted(eas_ids & THROWAWAY_DEVICE_IDS)
    if shared:
        raise ValidationError(f"DeviceId {shared[0]} is shared by many phones: not a device's")
    for eas_id in sorted(eas_ids):
        holder = snapshot.device_for_eas(eas_id)
        if holder is not None and holder.id != device.id and not device.retired:
            raise ValidationError(f"DeviceId {eas_id} already belongs to device {holder.id!r}")
    return replace(device, owner=owner, eas_ids=eas_ids)


def set_compliance(
    snapshot: Snapshot,
    device_id: str,
    violations: Iterable[Violation | str],
    *,
    actor: str,
    now: float,
    note: str = "",
) -> Changes:
    """Set a device's compliance: compliant exactly when ``violations`` is empty
    (a plain string is read by ``violation_from_text``)."""
    old = _device(snapshot, device_id)
    found = frozenset(v if isinstance(v, Violation) else violation_from_text(v) for v in violations)
    new = replace(old, compliant=not found, violations=found)
    return _put(PutDevice(new), "set_compliance", f"device:{device_id}", old, new, actor, note, now)


def retire_device(
    snapshot: Snapshot, device_id: str, *, actor: str, now: float, note: str = ""
) -> Changes:
    """Retire a device: its DeviceIds stop counting as registered (rows unlink)."""
    old = _device(snapshot, device_id)
    new = replace(old, retired=True)
    return _put_device(snapshot, old, new, "retire_device", actor, note, now)


def upsert_user(
    snapshot: Snapshot, user: User, *, actor: str, now: float, note: str = ""
) -> Changes:
    """Create or update a directory user; the principal must be canonical.

    Aliases are canonicalised; ``ConflictError`` when the principal is another
    user's known name or one of the user's names is another user or another
    user's name. Rows keyed under a name that becomes the user's are re-keyed.
    """
    key = canonical_principal(user.principal, snapshot.realms)
    if not key or key != user.principal:
        raise ValidationError(f"user principal {user.principal!r} is not canonical ({key!r})")
    user = replace(user, aliases=_aliases(snapshot, user))
    _check_names(snapshot, user)
    old = snapshot.users.get(key)
    changes = _put(PutUser(user), "upsert_user", f"user:{key}", old, user, actor, note, now)
    added = known_names(user, snapshot.realms) - snapshot.names_of(key)
    mapping = {name: key for name in added if snapshot.device_count(name)}
    if not changes or not mapping:
        return changes
    why = f"now known names of user {key}: {', '.join(sorted(mapping))}"
    return (*changes, *rekey_rows(snapshot, mapping, now=now, actor=actor, note=why))


def _aliases(snapshot: Snapshot, user: User) -> frozenset[str]:
    out = set()
    for raw in user.aliases:
        name = canonical_principal(raw, snapshot.realms)
        if name is None:
            raise ValidationError(f"alias {raw!r} names no principal")
        out.add(name)
    out.discard(user.principal)
    return frozenset(out)


def _check_names(snapshot: Snapshot, user: User) -> None:
    key = user.principal
    owner = snapshot.alias_owner(key)
    if owner is not None and owner != key:
        raise ConflictError(f"{key!r} is a known name (email or alias) of user {owner!r}")
    for name in sorted(known_names(user, snapshot.realms)):
        if name in snapshot.users:
            raise ConflictError(f"{name!r} (email or alias of {key!r}) is another user")
        owner = snapshot.alias_owner(name)
        if owner is not None and owner != key:
            raise ConflictError(
                f"{name!r} (email or alias of {key!r}) already names user {owner!r}"
            )


def set_preferences(
    snapshot: Snapshot,
    prefs: Preferences,
    *,
    actor: str,
    now: float,
    note: str = "",
    exact: bool = False,
) -> Changes:
    """Replace the preferences (an administrator's write); limits must be None
    or at least 1. Every preference whose value changes becomes admin-set (it
    wins over the configuration file from now on), besides those
    ``prefs.admin_set`` names; with ``exact``, ``prefs.admin_set`` is taken as
    it is (``sentry.policy.prefs.update_preferences``)."""
    for name in ("max_devices_per_mailbox", "max_mailboxes_per_device"):
        value = getattr(prefs, name)
        if value is not None and value < 1:
            raise ValidationError(f"{name} must be at least 1 or unset, not {value}")
    old = snapshot.prefs
    changed = {
        f.name
        for f in fields(Preferences)
        if f.name != "admin_set" and getattr(old, f.name) != getattr(prefs, f.name)
    }
    if not exact:
        prefs = replace(prefs, admin_set=prefs.admin_set | changed)
    return _put(
        PutPreferences(prefs), "set_preferences", "preferences", old, prefs, actor, note, now
    )


def put_pool(snapshot: Snapshot, pool: Pool, *, actor: str, now: float, note: str = "") -> Changes:
    """Create or update a backend pool."""
    if not pool.name or not pool.type:
        raise ValidationError("a pool needs a name and a backend type")
    old = snapshot.pools.get(pool.name)
    return _put(PutPool(pool), "put_pool", f"pool:{pool.name}", old, pool, actor, note, now)


def set_routing(
    snapshot: Snapshot, routing: Routing, *, actor: str, now: float, note: str = ""
) -> Changes:
    """Replace the routing; every pool it names must exist. User keys are
    canonicalised (the one rule), domain keys mapped to their realm; two keys
    naming one principal or realm are a ``ValidationError``."""
    named = [*routing.users.values(), *routing.domains.values(), routing.default]
    missing = sorted({n for n in named if n is not None and n not in snapshot.pools})
    if missing:
        raise ValidationError(f"routing names unknown pools: {', '.join(missing)}")
    routing = canonical_routing(routing, snapshot.realms)
    old = snapshot.routing
    return _put(PutRouting(routing), "set_routing", "routing", old, routing, actor, note, now)


def put_setting(
    snapshot: Snapshot, setting: ExchangeSetting, *, actor: str, now: float, note: str = ""
) -> Changes:
    """Create or update an Exchange setting (templates are checked when resolved)."""
    if not setting.name or not setting.user_name:
        raise ValidationError("an Exchange setting needs a name and a user name template")
    old = snapshot.settings.get(setting.name)
    target = f"setting:{setting.name}"
    return _put(PutSetting(setting), "put_setting", target, old, setting, actor, note, now)


def delete_setting(
    snapshot: Snapshot, name: str, *, actor: str, now: float, note: str = ""
) -> Changes:
    """Delete an Exchange setting."""
    old = snapshot.settings.get(name)
    if old is None:
        raise NotFoundError(f"no Exchange setting {name!r}")
    return _put(
        DeleteSetting(name), "delete_setting", f"setting:{name}", old, None, actor, note, now
    )


def put_label(
    snapshot: Snapshot, label: Label, *, actor: str, now: float, note: str = ""
) -> Changes:
    """Create or update a label (its settings and devices)."""
    if not label.name:
        raise ValidationError("a label needs a name")
    old = snapshot.labels.get(label.name)
    return _put(PutLabel(label), "put_label", f"label:{label.name}", old, label, actor, note, now)


def delete_label(
    snapshot: Snapshot, name: str, *, actor: str, now: float, note: str = ""
) -> Changes:
    """Delete a label."""
    old = snapshot.labels.get(name)
    if old is None:
        raise NotFoundError(f"no label {name!r}")
    return _put(DeleteLabel(name), "delete_label", f"label:{name}", old, None, actor, note, now)


def canonical_routing(routing: Routing, realms: Realms) -> Routing:
    """``routing`` with canonical user keys (the one rule) and domain keys mapped
    to their realm; ``ValidationError`` when two keys name one principal or realm."""
    users = _keys(routing.users, "routing user", lambda k: canonical_principal(k, realms))
    domains = _keys(routing.domains, "routing domain", realms.domain_key)
    return Routing(users=users, domains=domains, default=routing.default)


def _keys(
    table: Mapping[str, str], what: str, canonical: Callable[[str], str | None]
) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, pool in table.items():
        name = canonical(key)
        if not name:
            raise ValidationError(f"{what} {key!r} names no principal")
        if name in out:
            raise ValidationError(f"two {what} keys name {name!r}")
        out[name] = pool
    return out


def _device(snapshot: Snapshot, device_id: str) -> Device:
    device = snapshot.devices.get(device_id)
    if device is None:
        raise NotFoundError(f"no managed device {device_id!r}")
    return device
