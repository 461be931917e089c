"""An independent model of the access decision, for the model-based wire test.

Approach. This is a second statement of the decision table of design.md §4 and
the README's "How a request is decided", written from those texts and *not*
from ``sentry/policy/`` (nothing here imports the gateway). It knows one small
world, the constants below: two realms (example.com, also spelt
corp.example.com and NetBIOS ``EXAMPLE``, the realm of bare names; gmail.example),
routing by realm with no default (any other realm has no route), four
directory users (alice's email is an alias), two managed devices (one with two
EAS DeviceIds), loose DeviceIds, the throwaway ``validate``/``webservice``,
two pools of different types, three labels each pushing one mailbox, and two
moved mailboxes (451). It keeps the state the table needs: rows (DeviceId,
principal) with override, wipe, Link To and verified order, the established
backend type per device scope, compliance, label membership, preferences (and
which an administrator set) and the gateway's redirect cache.
``Model.request`` says what must happen to one request (``forward`` to a
pool, or a refusal class), ``Model.deliver`` where a forward lands, and ``Model.forwarded`` records
what the backend's acceptance changes; admin methods say whether an action
succeeds and apply it. ``sentry/testing/modelrun.py`` drives a real gateway
with the same steps and compares.

Readings of the texts where they leave a choice (each checked against the
README's wording; a disagreement with the gateway is a finding, not a reason
to bend the model):

* Rule 6 ("linked device non-compliant: refuse every association on the
  device"): every row whose DeviceId belongs to a non-compliant registered
  device is refused, linked or not (README: "refuse every mailbox of the
  device").
* Rule 8 counts rows: a mailbox's *devices* are its verified, non-throwaway
  rows (one per DeviceId, so a managed device with two DeviceIds carrying the
  same mailbox counts twice), ranked by when the backend first accepted them;
  a blocked or wipe-pending verified row still counts. An unverified row ranks
  after every verified one. ``max_mailboxes_per_device`` is the same per
  DeviceId.
* Linked: Link To stands in for "the device's owner or pushed to it" and
  for the DeviceId belonging to the device; the user must still be
  registered (design.md's sentence puts "or an admin used Link To" in the
  clause about the mailbox).
* Rule 3 scopes: a registered device (all its DeviceIds and the rows an admin
  linked to it with Link To), else the DeviceId. Registering a device folds
  its DeviceIds' established types into one: the one established first wins.
  The established type is set by the first request the backend accepts in the
  scope (a throwaway DeviceId never sets one and never has one), stays when
  rows are removed, and is cleared when the scope has no row left; an admin
  reset sets it to the given type.
* The identity step comes first: duplicate Authorization or a query ``User``
  naming another principal is 400; Bearer without OAuth configured is 403;
  neither creates a row.
* A forwarded request answered 401 (wrong password) leaves the row unverified;
  a 451 verifies it, also when the gateway refuses the redirect (README: the
  backend accepted, it authenticated the user). The gateway did not do the
  latter until the model-based test found it.
* Redirects (README "Backend redirects"): a 451 to a server in the pool's
  ``redirect_allow`` is followed and cached per mailbox (replayed when the
  body was kept, else 503 and the retry goes to the cached target); one to
  the other type's server is refused (502) and that server sees nothing; the
  cache does not survive a restart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "DEVICES",
    "MOVED",
    "REALMS",
    "WORLD_USERS",
    "Delivery",
    "ManagedDevice",
    "Model",
    "Principal",
    "Row",
    "Verdict",
    "canonical",
    "pool_of",
    "type_of",
]

Principal = tuple[str, str]  # (local part, realm); realm "" = none
Outcome = Literal["forward", "refuse", "bad", "auth"]

# realm name -> (suffixes, NetBIOS names); example.com is the realm of bare names.
REALMS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "example.com": (("example.com", "corp.example.com"), ("EXAMPLE",)),
    "gmail.example": (("gmail.example",), ("GMAIL",)),
}
DEFAULT_REALM = "example.com"
# routing: by realm, no default: a principal of any other realm has no route.
ROUTES = {"example.com": "exchange", "gmail.example": "gmail"}
POOL_TYPES = {"exchange": "exchange", "gmail": "gmail"}

# directory users: principal -> email (a known name of the user)
WORLD_USERS: dict[Principal, str] = {
    ("alice", "example.com"): "alice.smith@example.com",
    ("bob", "example.com"): "bob@example.com",
    ("dave", "example.com"): "dave@example.com",
    ("carol", "gmail.example"): "carol@gmail.example",
}


@dataclass(frozen=True)
class ManagedDevice:
    name: str
    owner: Principal
    platform: str
    eas_ids: tuple[str, ...]


DEVICES = (
    ManagedDevice("iphone1", ("alice", "example.com"), "ios", ("PHONE1A", "PHONE1B")),
    ManagedDevice("droid2", ("dave", "example.com"), "android", ("DROID2",)),
)
THROWAWAY = frozenset({"VALIDATE", "WEBSERVICE"})
# mailboxes the exchange pool's server has moved (it answers 451): bob to a server
# in the pool's redirect_allow ("moved", same type: followed), dave to the gmail
# pool's server (another type: refused, 502).
MOVED: dict[Principal, str] = {("bob", "example.com"): "moved", ("dave", "example.com"): "gmail"}
# commands whose bodies the gateway keeps (replayed to a redirect's target): the
# inspected ones, and any of a declared length up to 64 KiB; the driver sends the
# others chunked, so they are streamed: a 451 then gets 503 and the retry goes to
# the cached target.
BUFFERED = frozenset({"Sync", "Provision", "Settings", "Ping"})
# labels -> the principal their one Exchange setting pushes
LABELS: dict[str, Principal] = {
    "push-bob": ("bob", "example.com"),
    "push-carol": ("carol", "gmail.example"),
    "push-alice": ("alice", "example.com"),
}


def _realm_of_suffix(suffix: str) -> str:
    for name, (suffixes, _) in REALMS.items():
        if suffix in suffixes or suffix == name:
            return name
    return suffix  # an unknown domain is its own realm


def _realm_of_netbios(netbios: str) -> str:
    for name, (_, names) in REALMS.items():
        if netbios.upper() in names:
            return name
    return netbios.lower() + "\\"  # an unknown NetBIOS domain: its own realm


def canonical(name: str) -> Principal:
    """The principal a user name names under ``REALMS`` and the directory."""
    if "\\" in name:
        domain, _, local = name.partition("\\")
        found: Principal = (local.lower(), _realm_of_netbios(domain))
    elif "@" in name:
        local, _, suffix = name.rpartition("@")
        found = (local.lower(), _realm_of_suffix(suffix.lower()))
    else:
        found = (name.lower(), DEFAULT_REALM)
    for user, email in WORLD_USERS.items():  # a user's known names are the user
        local, _, suffix = email.rpartition("@")
        if found == (local, _realm_of_suffix(suffix)):
            return user
    return found


def pool_of(p: Principal) -> str | None:
    return ROUTES.get(p[1])


def type_of(p: Principal) -> str | None:
    pool = pool_of(p)
    return None if pool is None else POOL_TYPES[pool]


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    pool: str | None = None  # where a forward goes
    why: str = ""


@dataclass(frozen=True)
class Delivery:
    """Where a forwarded request lands: the servers that see it, the device's answer."""

    servers: tuple[str, ...]  # "exchange" (the pool's server), "moved", "gmail"
    answer: str  # "relayed" (the backend's answer), "redirect refused" (502), "retry" (503)


@dataclass
class Row:
    override: str | None = None  # "allow" / "block"
    wipe: bool = False
    verified: int | None = None  # order of first acceptance
    link: str | None = None  # the managed device an admin linked the row to


@dataclass
class Model:
    oauth: bool = False
    auto_block: bool = False
    max_devices: int | None = None
    max_mailboxes: int | None = None
    compliance_overrides_allow: bool = False
    rows: dict[tuple[str, Principal], Row] = field(default_factory=dict)
    established: dict[str, str] = field(default_factory=dict)  # scope -> type
    noncompliant: set[str] = field(default_factory=set)  # managed device names
    labels: dict[str, set[str]] = field(default_factory=dict)  # device -> labels
    redirects: dict[Principal, str] = field(default_factory=dict)  # the gateway's cache
    admin_set: set[str] = field(default_factory=set)  # preferences an admin set: they win
    devices: list[ManagedDevice] = field(default_factory=lambda: list(DEVICES))
    established_at: dict[str, int] = field(default_factory=dict)  # scope -> when
    clock: int = 0

    # -- the world ----------------------------------------------------------

    def device_of(self, device_id: str) -> ManagedDevice | None:
        return next((d for d in self.devices if device_id in d.eas_ids), None)

    def device_named(self, name: str) -> ManagedDevice | None:
        return next((d for d in self.devices if d.name == name), None)

    def _tick(self) -> int:
        self.clock += 1
        return self.clock

    def _establish(self, scope: str, backend_type: str) -> None:
        self.established[scope] = backend_type
        self.established_at[scope] = self._tick()

    def device_of_row(self, key: tuple[str, Principal]) -> ManagedDevice | None:
        row = self.rows.get(key)
        if row is not None and row.link is not None:
            return self.device_named(row.link)
        return self.device_of(key[0])

    def scope(self, key: tuple[str, Principal]) -> str:
        device = self.device_of_row(key)
        return f"device:{device.name}" if device else f"eas:{key[0]}"

    def pushed(self, device: ManagedDevice) -> set[Principal]:
        return {LABELS[label] for label in self.labels.get(device.name, set())}

    def linked(self, device_id: str, p: Principal) -> bool:
        row = self.rows.get((device_id, p))
        if row is not None and row.link is not None:
            return p in WORLD_USERS  # Link To stands for "owner or pushed" only
        device = self.device_of(device_id)
        if device is None or p not in WORLD_USERS:
            return False
        return p == device.owner or p in self.pushed(device)

    # -- requests -----------------------------------------------------------

    def identity(
        self,
        scheme: str,
        cred_user: str,
        query_user: str | None,
        duplicate: bool,
        valid_token: bool = True,
    ) -> Verdict | Principal:
        """The identity step: the principal, or the refusal."""
        if duplicate:
            return Verdict("bad", why="two Authorization headers")
        if scheme == "bearer" and not self.oauth:
            return Verdict("auth", why="Bearer without OAuth")
        if scheme == "bearer" and not valid_token:
            return Verdict("auth", why="expired token")
        p = canonical(cred_user)
        if query_user is not None and canonical(query_user) != p:
            return Verdict("bad", why="query User names another principal")
        return p

    def request(self, device_id: str, p: Principal) -> Verdict:
        """Decide a request of ``p`` on ``device_id`` (the row is created first)."""
        key = (device_id, p)
        row = self.rows.setdefault(key, Row())
        throwaway = device_id in THROWAWAY
        pool = pool_of(p)
        if row.wipe:
            return Verdict("refuse", why="WIPE")
        if pool is None:
            return Verdict("refuse", why="NO_BACKEND")
        established = self.established.get(self.scope(key))
        if not throwaway and established is not None and established != type_of(p):
            return Verdict("refuse", why="MIXED_BACKEND")
        if row.override == "block":
            return Verdict("refuse", why="MANUAL block")
        device = self.device_of_row(key)
        noncompliant = device is not None and device.name in self.noncompliant
        if row.override == "allow":
            if noncompliant and self.compliance_overrides_allow:
                return Verdict("refuse", why="COMPLIANCE over allow")
            return Verdict("forward", pool, "MANUAL allow")
        if noncompliant:
            return Verdict("refuse", why="COMPLIANCE")
        if self.auto_block and not self.linked(device_id, p):
            return Verdict("refuse", why="AUTO_BLOCK")
        if not throwaway and self._over_limit(device_id, p):
            return Verdict("refuse", why="LIMIT")
        return Verdict("forward", pool)

    def _over_limit(self, device_id: str, p: Principal) -> bool:
        def counted(k: tuple[str, Principal]) -> bool:
            return k[0] not in THROWAWAY and self.rows[k].verified is not None

        def excess(peers: list[tuple[str, Principal]], limit: int | None) -> bool:
            if limit is None:
                return False
            ranked = sorted((k for k in peers if counted(k)), key=self._verified_at)
            key = (device_id, p)
            position = ranked.index(key) + 1 if key in ranked else len(ranked) + 1
            return position > limit

        mailbox_rows = [k for k in self.rows if k[1] == p]
        device_rows = [k for k in self.rows if k[0] == device_id]
        return excess(mailbox_rows, self.max_devices) or excess(device_rows, self.max_mailboxes)

    def _verified_at(self, key: tuple[str, Principal]) -> int:
        return self.rows[key].verified or 0

    def deliver(self, p: Principal, pool: str, command: str, authenticated: bool) -> Delivery:
        """Where a request forwarded to ``pool`` goes (README "Backend redirects"):
        a 451 is followed to a server of the same type or the pool's allow-list
        and cached per mailbox, refused otherwise; never shown to the device. A
        request the server cannot authenticate gets its 401 before any 451."""
        cached = self.redirects.get(p)
        if cached is not None:
            return Delivery((cached,), "relayed")
        target = MOVED.get(p) if pool == "exchange" and authenticated else None
        if target is None:
            return Delivery((pool,), "relayed")
        if target != "moved":  # another backend type: fail closed
            return Delivery((pool,), "redirect refused")
        self.redirects[p] = target
        if command not in BUFFERED:
            return Delivery((pool,), "retry")
        return Delivery((pool, target), "relayed")

    def restarted(self) -> None:
        self.redirects.clear()  # the redirect cache is in memory

    def forwarded(self, device_id: str, p: Principal, accepted: bool) -> None:
        """The backend answered a forwarded request (accepted: 2xx, 449 or 451)."""
        if not accepted:
            return
        row = self.rows[(device_id, p)]
        if row.verified is None:
            row.verified = self._tick()
        if device_id not in THROWAWAY:
            scope = self.scope((device_id, p))
            if scope not in self.established:
                self._establish(scope, type_of(p) or "")

    # -- admin --------------------------------------------------------------

    def action(self, action: str, device_id: str, p: Principal) -> int:
        """An admin action on one row: the HTTP status class (2, 4 for 404/409)."""
        key = (device_id, p)
        row = self.rows.get(key)
        if action == "preapprove":
            established = self.established.get(self.scope(key))
            mixed = established is not None and established != type_of(p)
            if row is not None or pool_of(p) is None or mixed or device_id in THROWAWAY:
                return 4
            self.rows[key] = Row(override="allow")
            return 2
        if row is None:
            return 4
        if action in ("allow", "block"):
            row.override, row.wipe = action, False
        elif action == "reset":
            if row.wipe:
                return 4
            row.override = None
        elif action == "wipe":
            row.wipe = True
        elif action == "remove":
            scope = self.scope(key)
            del self.rows[key]
            if not any(self.scope(k) == scope for k in self.rows):
                self.established.pop(scope, None)
        return 2

    def register(self, device: ManagedDevice) -> int:
        """Register a managed device: its DeviceIds' established types fold into
        one, the oldest winning (2); 4 when the name or a DeviceId is taken."""
        taken = self.device_named(device.name) or any(self.device_of(i) for i in device.eas_ids)
        if taken:
            return 4
        scopes = [f"eas:{i}" for i in device.eas_ids]
        known = [(self.established_at[sc], sc) for sc in scopes if sc in self.established]
        self.devices.append(device)
        if known:
            at, oldest = min(known)
            self.established[f"device:{device.name}"] = self.established[oldest]
            self.established_at[f"device:{device.name}"] = at
        return 2

    def compliance(self, device_name: str, compliant: bool) -> int:
        if self.device_named(device_name) is None:
            return 4
        if compliant:
            self.noncompliant.discard(device_name)
        else:
            self.noncompliant.add(device_name)
        return 2

    def link(self, device_id: str, p: Principal, device_name: str) -> int:
        """Link To: the row joins a managed device (2), or 4 when there is no row."""
        row = self.rows.get((device_id, p))
        if row is None or self.device_named(device_name) is None:
            return 4
        row.link = device_name
        return 2

    def push(self, device_name: str, label: str, add: bool) -> int:
        """Put a device in a label (or take it out): 2, or 4 when the push is refused."""
        device = self.device_named(device_name)
        if device is None:
            return 4
        current = self.labels.setdefault(device_name, set())
        if not add:
            current.discard(label)
            return 2
        if label in current:
            return 2  # nothing changes: a problem the device already has refuses nothing
        after = current | {label}
        mailbox_type = self.established.get(f"device:{device_name}") or type_of(device.owner)
        pushed = {LABELS[lb] for lb in after}
        if type_of(LABELS[label]) != mailbox_type:
            return 4  # MIXED_BACKEND
        if device.platform == "android" and len(pushed | {device.owner}) > 2:
            return 4  # ANDROID_LIMIT
        current.add(label)
        return 2

    def reset_type(self, scope: str, backend_type: str) -> int:
        if scope.startswith("eas:"):
            device_id = scope[4:]
            known = scope in self.established or any(k[0] == device_id for k in self.rows)
            if device_id in THROWAWAY or not known:
                return 4  # a throwaway DeviceId has no type; an unknown one is not found
            if self.device_of(device_id) is not None:
                return 4  # a DeviceId of a managed device: reset the device
        elif self.device_named(scope[7:]) is None:
            return 4
        self._establish(scope, backend_type)
        return 2
