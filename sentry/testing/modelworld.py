"""The model-based wire test's world: two recording backends and a gateway.

Approach. ``World`` is what ``sentry.testing.modelrun`` plays steps against:
three strict recording backends (an ``exchange`` pool, the server a moved
mailbox is redirected to, a ``gmail`` pool), a gateway in front of them on a
SQLite file in ``root`` (configured from the ``Config`` of the run and the
realms and routes of ``sentry.testing.model``), and an admin client that
seeds the model's users, devices, settings and labels. A ``Request`` step
goes on the wire as raw bytes (both query forms, Basic or Bearer, a
duplicate Authorization; a command the gateway does not keep goes chunked,
so it is streamed), so what a backend records is exactly what the gateway
forwarded.

The recording backends answer 401 to Basic with a wrong password (the row
stays unverified), 451 to a moved mailbox and 200 to everything else, with
a header naming the backend so a relayed answer is told from the gateway's
own.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import jwt

from sentry.app import Gateway, start_gateway
from sentry.eas.request import Command
from sentry.eas.wbxml import encode
from sentry.eas.xmlform import from_xml
from sentry.settings import settings_from_mapping

from . import model as m
from .modelsteps import Config, Request
from .oauth import TokenIssuer
from .raw_client import RawConnection, request_bytes
from .recording_backend import RecordedRequest, RecordingBackend, RequestHead

__all__ = ["EAS_PATH", "PASSWORD", "World"]

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


class World:
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
