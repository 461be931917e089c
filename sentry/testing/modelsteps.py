"""The model-based wire test's steps and the Hypothesis strategies that draw them.

Approach. A run of ``sentry.testing.modelrun`` is a ``Config`` (OAuth on or
off, the file's preferences) and a list of ``Step`` values. Each step is a
frozen dataclass: an EAS request (any spelling of a principal —
``DOMAIN\\user``, UPN, SMTP, the directory email, any case — plain or base64
query, a query ``User`` that agrees or not, several DeviceIds of one managed
device in any case, Basic with a good or wrong password, Bearer tokens, a
duplicate Authorization), an admin action on a row (allow, block, reset,
wipe, remove, pre-approve), a preference change, a compliance flip, a label
push, a backend-type reset or a restart of the gateway. The strategies draw
principals and DeviceIds by weight from small tables, so the same rows meet
again (blocked, then used from another spelling); the steps themselves know
nothing of the gateway, which ``modelrun`` drives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from . import model as m

__all__ = [
    "SPELLINGS",
    "Admin",
    "Compliance",
    "Config",
    "Link",
    "Prefs",
    "Push",
    "Register",
    "Request",
    "ResetType",
    "Restart",
    "Step",
    "configs",
    "requests",
    "sequences",
    "spellings",
    "steps",
]

# Spellings of each principal of the world (and of some outside it).
SPELLINGS: dict[m.Principal, tuple[str, ...]] = {
    ("alice", "example.com"): (
        "alice", "ALICE", "EXAMPLE\\alice", "example\\Alice", "alice@example.com",
        "Alice@Corp.Example.Com", "alice.smith@example.com", "ALICE.SMITH@example.com",
    ),
    ("bob", "example.com"): ("bob", "EXAMPLE\\BOB", "bob@corp.example.com"),
    ("dave", "example.com"): ("dave", "Dave@Example.com"),
    ("carol", "gmail.example"): ("carol@gmail.example", "GMAIL\\carol", "Carol@GMAIL.example"),
    ("carol", "example.com"): ("carol", "EXAMPLE\\carol"),  # not carol@gmail: another one
    ("erin", "example.com"): ("erin", "erin@corp.example.com"),  # not in the directory
    ("zed", "other.example"): ("zed@other.example", "ZED@Other.Example"),  # no route
}  # fmt: skip
ALL_SPELLINGS = tuple(s for names in SPELLINGS.values() for s in names)
# Requests and admin steps mostly name a few principals and DeviceIds, so rows
# meet again: the same row blocked, then used from another spelling, and so on.
_WEIGHTS = {
    ("alice", "example.com"): 5,
    ("carol", "gmail.example"): 4,
    ("bob", "example.com"): 3,
    ("dave", "example.com"): 1,
    ("carol", "example.com"): 1,
    ("erin", "example.com"): 1,
    ("zed", "other.example"): 1,
}
DEVICE_IDS = (
    ("PHONE1A",) * 3 + ("phone1a", "Phone1b", "PHONE1B", "LOOSE1", "LOOSE1", "loose1")
    + ("DROID2", "LOOSE2", "LOOSE3", "validate", "WebService")
)  # fmt: skip
ROW_IDS: tuple[str, ...] = ("PHONE1A", "PHONE1A", "phone1b", "DROID2", "LOOSE1", "LOOSE1")
ROW_IDS += ("LOOSE2", "LOOSE3", "validate")
RESET_SCOPES: tuple[str, ...] = ("device:iphone1", "device:droid2", "device:tab3")
RESET_SCOPES += ("eas:LOOSE1", "eas:LOOSE2", "eas:LOOSE3")


def spellings() -> st.SearchStrategy[str]:
    """A spelling of a principal, the principal drawn by weight."""
    weighted = [p for p, weight in _WEIGHTS.items() for _ in range(weight)]
    return st.sampled_from(weighted).flatmap(lambda p: st.sampled_from(SPELLINGS[p]))


# -- steps ---------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    device_id: str
    user: str  # the credentials' user name (Basic) or the token's upn (Bearer)
    scheme: str = "basic"  # "basic" / "bearer"
    good_password: bool = True  # Bearer: False sends an expired token
    query_user: str | None = None  # the query User, None: not sent
    base64_query: bool = False
    duplicate: bool = False  # a second Authorization header (another user)
    command: str = "Sync"  # Sync (body kept, replayable) or FolderSync (chunked: streamed)


@dataclass(frozen=True)
class Admin:
    action: str  # allow / block / reset / wipe / remove / preapprove
    device_id: str
    user: str
    # When set, the action names an existing row instead (the model's rows in
    # order, this index modulo their number; the user in a spelling of its own),
    # so actions meet rows often; with no row yet, device_id and user are used.
    row: int | None = None


@dataclass(frozen=True)
class Link:
    device_id: str  # a loose DeviceId
    user: str
    device: str  # the managed device


@dataclass(frozen=True)
class Register:
    """Register the managed device ``tab3`` (iOS) with these loose DeviceIds."""

    owner: str
    eas_ids: tuple[str, ...]


@dataclass(frozen=True)
class Prefs:
    name: str
    value: Any


@dataclass(frozen=True)
class Compliance:
    device: str
    compliant: bool


@dataclass(frozen=True)
class Push:
    device: str
    label: str
    add: bool


@dataclass(frozen=True)
class ResetType:
    scope: str  # "device:<name>" or "eas:<DeviceId>"
    backend_type: str


@dataclass(frozen=True)
class Restart:
    # preferences the configuration file says from now on (changed before the
    # restart); values an administrator set keep winning over them (issue 9 item 10)
    file_prefs: tuple[tuple[str, Any], ...] = ()


Step = Request | Admin | Link | Register | Prefs | Compliance | Push | ResetType | Restart


@dataclass(frozen=True)
class Config:
    oauth: bool = False
    auto_block: bool = False
    max_devices: int | None = None
    max_mailboxes: int | None = None
    compliance_overrides_allow: bool = False


@st.composite
def requests(draw: st.DrawFn) -> Request:
    user = draw(spellings())
    own = SPELLINGS[m.canonical(user)]
    query_user = draw(
        st.sampled_from(("same", "same", "other spelling", "none", "any")).flatmap(
            lambda how: {
                "same": st.just(user),
                "other spelling": st.sampled_from(own),
                "none": st.none(),
                "any": spellings(),
            }[how]
        )
    )
    return Request(
        device_id=draw(st.sampled_from(DEVICE_IDS)),
        user=user,
        scheme=draw(st.sampled_from(("basic",) * 3 + ("bearer",))),
        good_password=draw(st.sampled_from((True,) * 5 + (False,))),
        query_user=query_user,
        base64_query=draw(st.booleans()),
        duplicate=draw(st.sampled_from((False,) * 15 + (True,))),
        command=draw(st.sampled_from(("Sync", "FolderSync"))),
    )


def steps() -> st.SearchStrategy[Step]:
    admin = st.builds(
        Admin,
        st.sampled_from(("allow", "block", "reset", "wipe", "remove", "preapprove")),
        st.sampled_from(ROW_IDS),
        spellings(),
        st.one_of(st.none(), st.integers(0, 63), st.integers(0, 63)),
    )
    prefs = st.one_of(
        st.builds(Prefs, st.just("auto_block_unregistered"), st.booleans()),
        st.builds(Prefs, st.just("compliance_overrides_allow"), st.booleans()),
        st.builds(Prefs, st.just("max_devices_per_mailbox"), st.sampled_from((None, 1, 2))),
        st.builds(Prefs, st.just("max_mailboxes_per_device"), st.sampled_from((None, 1, 2))),
    )
    devices = st.sampled_from([*(d.name for d in m.DEVICES), "tab3"])
    kinds: dict[str, tuple[int, st.SearchStrategy[Step]]] = {
        "request": (30, requests()),
        "admin": (6, admin),
        "link": (
            1,
            st.builds(Link, st.sampled_from(("LOOSE1", "loose2")), spellings(), devices),
        ),
        "prefs": (3, prefs),
        "compliance": (2, st.builds(Compliance, devices, st.booleans())),
        "push": (2, st.builds(Push, devices, st.sampled_from(sorted(m.LABELS)), st.booleans())),
        "reset": (
            1,
            st.builds(
                ResetType,
                st.sampled_from(RESET_SCOPES),
                st.sampled_from(("exchange", "gmail")),
            ),
        ),
        "register": (
            1,
            st.builds(
                Register,
                st.sampled_from(("bob", "carol@gmail.example")),
                st.sampled_from((("LOOSE2",), ("LOOSE2", "LOOSE3"), ("loose3",))),
            ),
        ),
        "restart": (
            1,
            st.builds(
                Restart,
                st.lists(prefs, max_size=2).map(lambda ps: tuple((p.name, p.value) for p in ps)),
            ),
        ),
    }
    weighted = [name for name, (weight, _) in kinds.items() for _ in range(weight)]
    return st.sampled_from(weighted).flatmap(lambda name: kinds[name][1])


def configs() -> st.SearchStrategy[Config]:
    return st.builds(
        Config,
        oauth=st.sampled_from((True, True, True, False)),
        auto_block=st.booleans(),
        max_devices=st.sampled_from((None, 1, 2)),
        max_mailboxes=st.sampled_from((None, 2)),
        compliance_overrides_allow=st.booleans(),
    )


def sequences(min_steps: int, max_steps: int) -> st.SearchStrategy[list[Step]]:
    """A run's steps: ``min_steps`` to ``max_steps`` of them."""
    return st.lists(steps(), min_size=min_steps, max_size=max_steps)
