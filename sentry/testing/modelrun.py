"""The model-based wire test's driver: steps, their strategies, and the run.

Approach. A run is a ``Config`` (OAuth on or off, the file's preferences) and
a list of ``Step`` values drawn by Hypothesis: EAS requests (any spelling of
a principal — ``DOMAIN\\user``, UPN, SMTP, the directory email, any case —
plain or base64 query, a query ``User`` that agrees or not, several DeviceIds
of one managed device in any case, Basic with a good or wrong password,
Bearer tokens, a duplicate Authorization), admin actions on rows (allow,
block, reset, wipe, remove, pre-approve), preference changes, compliance
flips, label pushes, backend-type resets and restarts of the gateway on the
same SQLite file. ``run`` starts two strict recording backends (an
``exchange`` pool and a ``gmail`` pool), a gateway in front of them in
``root``, seeds the world of ``sentry.testing.model``, and plays the steps
against the gateway and the model side by side. After each request it
compares what each backend received with the model's verdict (forwarded to
that pool, or to none) and the answer's class; after each admin step the
status class. The first difference raises ``Mismatch`` with the step and
the trace so far, which Hypothesis shrinks to a minimal sequence.

The recording backends answer 401 to Basic with a wrong password (the row
stays unverified) and 200 to everything else, with a header naming the pool
so a relayed answer is told from the gateway's own.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import jwt
from hypothesis import strategies as st

from sentry.app import Gateway, start_gateway
from sentry.eas.request import Command
from sentry.eas.wbxml import encode
from sentry.eas.xmlform import from_xml
from sentry.settings import settings_from_mapping

from . import model as m
from .oauth import TokenIssuer
from .raw_client import RawConnection, request_bytes
from .recording_backend import RecordedRequest, RecordingBackend, RequestHead

__all__ = [
    "SUITE_PROFILE",
    "Admin",
    "Compliance",
    "Config",
    "Link",
    "Mismatch",
    "Prefs",
    "Push",
    "Register",
    "Request",
    "ResetType",
    "Restart",
    "RunStats",
    "Step",
    "configs",
    "requests",
    "run",
    "run_profile",
    "sequences",
    "spellings",
    "steps",
]

# The bounded profile ``make test`` runs (tests/proxy/test_modeltest.py, derandomized);
# ``python -m bench modeltest`` runs it as its baseline, then the long profile.
SUITE_PROFILE = {"examples": 40, "min_steps": 10, "max_steps": 45}
PASSWORD = "pw"
EAS_PATH = "/Microsoft-Server-ActiveSync"
BODIES = {
    "FolderSync": encode(
        from_xml('<FolderSync xmlns="FolderHierarchy"><SyncKey>0</SyncKey></FolderSync>')
    ),
    "Sync": encode(
        from_xml(
            '<Sync xmlns="AirSync"><Collections><Collection><SyncKey>0</SyncKey>'
            "<CollectionId>1</CollectionId></Collection></Collections></Sync>"
        )
    ),
}
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


# -- the run -------------------------------------------------------------------


class Mismatch(AssertionError):
    """The gateway and the model disagree."""


@dataclass
class RunStats:
    examples: int = 0
    steps: int = 0
    requests: int = 0
    forwarded: int = 0
    refused: int = 0
    restarts: int = 0
    seconds: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)  # request verdicts by reason
    admin: dict[str, int] = field(default_factory=dict)  # admin steps by kind and answer


_OPTIONS = (
    b"HTTP/1.1 200 OK\r\nMS-ASProtocolVersions: 14.0,14.1,16.0,16.1\r\n"
    b"MS-ASProtocolCommands: Sync,FolderSync,Provision,Ping,Settings\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def _user_of(authorization: str) -> tuple[str | None, bool]:
    """The user name a backend reads from the header, and whether it authenticates."""
    scheme, _, value = authorization.partition(" ")
    if scheme == "Basic":
        user, _, password = base64.b64decode(value).decode("utf-8").partition(":")
        return user, password == PASSWORD
    if scheme == "Bearer":  # the gateway validated it; the backend reads its claim
        claims = jwt.decode(value, options={"verify_signature": False})
        return str(claims.get("upn")), True
    return None, False


class _Responder:
    """A backend's answers: 401 to a wrong password, 451 for a moved mailbox
    (only the exchange pool's server, with ``locations``), else 200; every
    answer names the server so a relayed answer is told from the gateway's."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.locations: dict[m.Principal, str] = {}

    def __call__(self, request: RecordedRequest | RequestHead) -> bytes:
        if request.method == "OPTIONS":
            return _OPTIONS
        auth = next((v for k, v in request.headers if k.lower() == "authorization"), "")
        user, authenticated = _user_of(auth)
        status, extra = b"200 OK", b""
        if not authenticated:
            status = b"401 Unauthorized"
        elif user is not None and m.canonical(user) in self.locations:
            status = b"451 Redirect"
            extra = b"X-MS-Location: " + self.locations[m.canonical(user)].encode() + b"\r\n"
        return (
            b"HTTP/1.1 " + status + b"\r\nMS-Server-ActiveSync: 15.1\r\n" + extra
            + b"X-Model-Backend: " + self.name.encode() + b"\r\nContent-Length: 0\r\n\r\n"
        )  # fmt: skip


class _World:
    """The gateway under test, its two backends and an admin client."""

    def __init__(self, root: Path, config: Config, issuer: TokenIssuer) -> None:
        self.root = root
        self.config = config
        self.issuer = issuer
        self.backends: dict[str, RecordingBackend] = {}
        self.gateway: Gateway | None = None
        self.session: aiohttp.ClientSession | None = None
        self.settings: Any = None
        self.data: dict[str, Any] = {}

    async def start(self) -> None:
        responders = {name: _Responder(name) for name in ("exchange", "moved", "gmail")}
        for name, responder in responders.items():
            self.backends[name] = await RecordingBackend(responder).start()
        responders["exchange"].locations = {
            p: self.backends[server].url + EAS_PATH for p, server in m.MOVED.items()
        }
        identity: dict[str, Any] = {
            "realms": [
                {"name": name, "suffixes": list(sfx), "netbios": list(nb)}
                for name, (sfx, nb) in m.REALMS.items()
            ],
            "default_realm": m.DEFAULT_REALM,
        }
        if self.config.oauth:
            (self.root / "jwks.json").write_bytes(self.issuer.jwks_bytes())
            identity["oauth"] = self.issuer.settings(jwks_file="jwks.json")
        data = {
            "gateway": {"listen": {"host": "127.0.0.1", "port": 0}, "tls": {"enabled": False}},
            "admin": {"listen": {"host": "127.0.0.1", "port": 0}, "token_file": "admin-token"},
            "store": {"kind": "sqlite", "path": "sentry.db", "unverified_expiry_seconds": 0},
            "logging": {"level": "warning", "format": "json"},
            "identity": identity,
            "pools": [
                {
                    "name": "exchange",
                    "type": "exchange",
                    "servers": [self.backends["exchange"].url],
                    "redirect_allow": [self.backends["moved"].url],
                },
                {"name": "gmail", "type": "gmail", "servers": [self.backends["gmail"].url]},
            ],
            "routing": {"domains": dict(m.ROUTES)},
            "preferences": {
                "auto_block_unregistered": self.config.auto_block,
                "max_devices_per_mailbox": self.config.max_devices,
                "max_mailboxes_per_device": self.config.max_mailboxes,
                "compliance_overrides_allow": self.config.compliance_overrides_allow,
            },
        }
        self.data = data
        self.settings = settings_from_mapping(data)
        self.session = aiohttp.ClientSession()
        await self._start_gateway()

    async def _start_gateway(self) -> None:
        self.gateway = await start_gateway(self.settings, root=self.root, touch_flush=False)
        pools = self.gateway.upstreams.pools.values()
        async with asyncio.timeout(10):
            while any(p.not_ready() for p in pools):
                await asyncio.sleep(0.005)

    async def restart(self, file_prefs: tuple[tuple[str, Any], ...] = ()) -> None:
        assert self.gateway is not None
        await self.gateway.stop()
        self.gateway = None
        if file_prefs:
            self.data["preferences"] = {**self.data["preferences"], **dict(file_prefs)}
            self.settings = settings_from_mapping(self.data)
        await self._start_gateway()

    async def stop(self) -> None:
        if self.gateway is not None:
            await self.gateway.stop()
        if self.session is not None:
            await self.session.close()
        for b in self.backends.values():
            await b.stop()

    async def api(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        assert self.gateway is not None and self.session is not None
        headers = {"Authorization": f"Bearer {self.gateway.admin_token}"}
        url = self.gateway.admin_url + path
        async with self.session.request(method, url, json=body, headers=headers) as resp:
            text = await resp.text()
            return resp.status, (json.loads(text) if text else None)

    async def seed(self) -> None:
        for (local, realm), email in m.WORLD_USERS.items():
            await self._ok("PUT", f"/api/users/{local}@{realm}", {"email": email})
        for label, (local, realm) in m.LABELS.items():
            setting = {"user_name": f"{local}@{realm}", "email": m.WORLD_USERS[(local, realm)]}
            await self._ok("PUT", f"/api/exchange-settings/{label}", setting)
            await self._ok("PUT", f"/api/labels/{label}", {"settings": [label]})
        for d in m.DEVICES:
            body = {
                "id": d.name,
                "owner": f"{d.owner[0]}@{d.owner[1]}",
                "platform": d.platform,
                "eas_device_ids": list(d.eas_ids),
                "note": "seed",
            }
            await self._ok("POST", "/api/devices", body)

    async def _ok(self, method: str, path: str, body: Any) -> None:
        status, answer = await self.api(method, path, body)
        if status // 100 != 2:
            raise RuntimeError(f"seed {method} {path}: {status} {answer}")

    def counts(self) -> dict[str, int]:
        return {pool: len(b.eas_requests()) for pool, b in self.backends.items()}

    async def send(self, step: Request) -> tuple[int, str | None]:
        assert self.gateway is not None
        target = f"{EAS_PATH}?{_query(step)}"
        headers = [("MS-ASProtocolVersion", "14.1"), ("Authorization", self._auth(step))]
        if step.duplicate:
            headers.append(("Authorization", _basic("bob", PASSWORD)))
        headers += [("Content-Type", "application/vnd.ms-sync.wbxml"), ("Connection", "close")]
        body = BODIES[step.command]
        if step.command not in m.BUFFERED:  # chunked, no declared length: streamed
            headers.append(("Transfer-Encoding", "chunked"))
            body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        data = request_bytes("POST", target, headers, body)
        async with await RawConnection.open(self.gateway.proxy_url) as conn:
            await conn.send(data)
            answer = await conn.response(timeout=20)
        return answer.status, answer.header("X-Model-Backend")

    def _auth(self, step: Request) -> str:
        if step.scheme == "bearer":
            lifetime = 3600.0 if step.good_password else -600.0  # expired ten minutes ago
            return "Bearer " + self.issuer.token(step.user, lifetime=lifetime)
        return _basic(step.user, PASSWORD if step.good_password else "wrong")


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _query(step: Request) -> str:
    if not step.base64_query:
        query = f"Cmd={step.command}&DeviceId={quote(step.device_id)}&DeviceType=iPhone"
        if step.query_user is not None:
            query += f"&User={quote(step.query_user, safe='@')}"
        return query
    dev = step.device_id.encode()
    raw = bytes([141, Command(step.command).code or 0, 0x09, 0x04, len(dev)]) + dev
    raw += b"\x00\x06iPhone"
    if step.query_user is not None:
        usr = step.query_user.encode()
        raw += bytes([8, len(usr)]) + usr
    return quote(base64.b64encode(raw).decode("ascii"), safe="")


def _answer_class(status: int, backend: str | None) -> str:
    if backend is not None:
        return "relayed"
    if status == 200:
        return "refuse"
    if status == 400:
        return "bad"
    if status in (401, 403):
        return "auth"
    if status == 502:
        return "redirect refused"
    if status == 503:
        return "retry"
    return f"http {status}"


class _Runner:
    def __init__(self, world: _World, model: m.Model, stats: RunStats) -> None:
        self.world = world
        self.model = model
        self.stats = stats
        self.trace: list[str] = []

    def fail(self, message: str) -> None:
        trace = "\n  ".join(self.trace)
        raise Mismatch(f"{message}\nsteps so far:\n  {trace}")

    async def step(self, step: Step) -> None:
        self.stats.steps += 1
        self.trace.append(repr(step))
        if isinstance(step, Request):
            await self.request(step)
        elif isinstance(step, Restart):
            self.stats.restarts += 1
            self.model.restarted()
            for name, value in step.file_prefs:
                if name not in self.model.admin_set:
                    setattr(self.model, _PREF_ATTRS[name], value)
            await self.world.restart(step.file_prefs)
        else:
            await self.admin(step)

    async def request(self, step: Request) -> None:
        self.stats.requests += 1
        device_id = step.device_id.upper()
        who = self.model.identity(
            step.scheme, step.user, step.query_user, step.duplicate, step.good_password
        )
        verdict = who if isinstance(who, m.Verdict) else self.model.request(device_id, who)
        accepted = step.good_password  # a Bearer request forwarded had a valid token
        expected: tuple[set[str], str]
        if verdict.outcome == "forward":
            assert verdict.pool is not None and not isinstance(who, m.Verdict)
            delivery = self.model.deliver(who, verdict.pool, step.command, accepted)
            expected = (set(delivery.servers), delivery.answer)
        else:
            expected = (set(), verdict.outcome)
        before = self.world.counts()
        status, backend = await self.world.send(step)
        after = self.world.counts()
        seen = {name for name in after if after[name] != before[name]}
        got = _answer_class(status, backend)
        why = verdict.why or verdict.outcome
        self.stats.outcomes[why] = self.stats.outcomes.get(why, 0) + 1
        if seen != expected[0] or any(after[p] - before[p] > 1 for p in after):
            self.fail(
                f"backends saw {sorted(seen) or 'nothing'} ({before} -> {after}), the model says "
                f"{verdict.outcome} {sorted(expected[0])} ({verdict.why}); answer {status}"
            )
        if got != expected[1]:
            self.fail(f"answer {status} ({got}), the model says {expected[1]} ({verdict})")
        if verdict.outcome == "forward":
            self.stats.forwarded += 1
            assert not isinstance(who, m.Verdict)
            self.model.forwarded(device_id, who, accepted)
        else:
            self.stats.refused += 1
        self.trace[-1] += f"  -> {got} {sorted(seen) or verdict.why}"

    def _target(self, step: Admin) -> tuple[str, str]:
        rows = sorted(self.model.rows)
        if step.row is None or not rows:
            return step.device_id, step.user
        device_id, p = rows[step.row % len(rows)]
        names = SPELLINGS.get(p, (f"{p[0]}@{p[1]}",))
        return device_id, names[step.row % len(names)]

    async def admin(self, step: Step) -> None:
        note = {"note": "model"}
        if isinstance(step, Admin):
            device_id, user = self._target(step)
            expected = self.model.action(step.action, device_id.upper(), m.canonical(user))
            path = f"/api/associations/{quote(device_id)}/{quote(user, safe='@')}"
            status, body = await self.world.api("POST", f"{path}/{step.action}", note)
        elif isinstance(step, Link):
            expected = self.model.link(step.device_id.upper(), m.canonical(step.user), step.device)
            path = f"/api/associations/{quote(step.device_id)}/{quote(step.user, safe='@')}"
            status, body = await self.world.api(
                "POST", f"{path}/link", {"device": step.device} | note
            )
        elif isinstance(step, Register):
            ids = tuple(i.upper() for i in step.eas_ids)
            device = m.ManagedDevice("tab3", m.canonical(step.owner), "ios", ids)
            expected = self.model.register(device)
            body = {
                "id": "tab3",
                "owner": step.owner,
                "platform": "ios",
                "eas_device_ids": list(step.eas_ids),
                "note": "model",
            }
            status, body = await self.world.api("POST", "/api/devices", body)
        elif isinstance(step, Prefs):
            expected = 2
            setattr(self.model, _PREF_ATTRS[step.name], step.value)
            self.model.admin_set.add(step.name)
            status, body = await self.world.api(
                "PUT", "/api/preferences", {step.name: step.value} | note
            )
        elif isinstance(step, Compliance):
            expected = self.model.compliance(step.device, step.compliant)
            violations = [] if step.compliant else ["os_version"]
            status, body = await self.world.api(
                "PUT", f"/api/devices/{step.device}/compliance", {"violations": violations}
            )
        elif isinstance(step, Push):
            expected = self.model.push(step.device, step.label, step.add)
            change = {"add" if step.add else "remove": [step.device]}
            status, body = await self.world.api(
                "POST", f"/api/labels/{step.label}/devices", change | note
            )
        else:
            assert isinstance(step, ResetType)
            expected = self.model.reset_type(step.scope, step.backend_type)
            kind, _, name = step.scope.partition(":")
            base = "/api/devices" if kind == "device" else "/api/device-ids"
            status, body = await self.world.api(
                "POST",
                f"{base}/{name}/reset-backend-type",
                {"backend_type": step.backend_type} | note,
            )
        self.trace[-1] += f"  -> {status}"
        kind = f"{getattr(step, 'action', type(step).__name__.lower())} {status // 100}xx"
        self.stats.admin[kind] = self.stats.admin.get(kind, 0) + 1
        if status // 100 != expected:
            self.fail(f"admin answer {status} {body}, the model expects {expected}xx")


_PREF_ATTRS = {
    "auto_block_unregistered": "auto_block",
    "compliance_overrides_allow": "compliance_overrides_allow",
    "max_devices_per_mailbox": "max_devices",
    "max_mailboxes_per_device": "max_mailboxes",
}


async def run(
    root: Path,
    config: Config,
    sequence: Sequence[Step],
    issuer: TokenIssuer,
    stats: RunStats | None = None,
) -> RunStats:
    """Play ``sequence`` against a fresh gateway in ``root`` and the model; raise
    ``Mismatch`` at the first disagreement."""
    stats = stats if stats is not None else RunStats()
    started = time.perf_counter()
    model = m.Model(
        oauth=config.oauth,
        auto_block=config.auto_block,
        max_devices=config.max_devices,
        max_mailboxes=config.max_mailboxes,
        compliance_overrides_allow=config.compliance_overrides_allow,
    )
    world = _World(root, config, issuer)
    try:
        await world.start()
        await world.seed()
        runner = _Runner(world, model, stats)
        runner.trace.append(repr(config))
        for step in sequence:
            await runner.step(step)
    finally:
        await world.stop()
        stats.examples += 1
        stats.seconds += time.perf_counter() - started
    return stats


def sequences(min_steps: int, max_steps: int) -> st.SearchStrategy[list[Step]]:
    """A run's steps: ``min_steps`` to ``max_steps`` of them."""
    return st.lists(steps(), min_size=min_steps, max_size=max_steps)


def run_profile(
    root: Path,
    examples: int,
    max_steps: int,
    *,
    min_steps: int = 1,
    seed_value: int | None = None,
    derandomize: bool = False,
) -> RunStats:
    """Run ``examples`` Hypothesis examples of up to ``max_steps`` steps each,
    every one against a fresh gateway under ``root``; a mismatch raises (shrunk)."""
    from hypothesis import HealthCheck, given, seed, settings

    issuer = TokenIssuer()
    stats = RunStats()
    counter = iter(range(1 << 62))

    def one(config: Config, sequence: list[Step]) -> None:
        work = root / f"run-{next(counter)}"
        work.mkdir(parents=True)
        try:
            asyncio.run(run(work, config, sequence, issuer, stats))
        finally:
            _remove_tree(work)

    profile = settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=derandomize,
        suppress_health_check=list(HealthCheck),
    )
    test: Any = profile(given(configs(), sequences(min_steps, max_steps))(one))
    if seed_value is not None:
        test = seed(seed_value)(test)
    test()
    return stats


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
