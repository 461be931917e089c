"""The demo EAS backend: an aiohttp app that answers like a small Exchange server.

Approach. ``build_backend_app`` wires one ``BackendState`` into an app with
three routes: the control API under ``/_demo/`` and one catch-all that serves
``/Microsoft-Server-ActiveSync`` case-insensitively. The EAS route is the
HTTP shell around the sans-aiohttp handlers of ``eas_*.py``, in this order:

1. OPTIONS needs no credentials and lists versions and commands (MS-ASHTTP 4.3);
   other methods but POST get 501, as Exchange answers a browser.
2. ``Authorization: Basic`` must name a configured mailbox (user name or
   email), else 401 with ``WWW-Authenticate: Basic``; ``Bearer`` is accepted
   when the config has a ``bearer`` check (token -> mailbox name). A mailbox
   marked as moved (``RunningBackend.move``) gets 451 with ``X-MS-Location``
   and its request is not processed (MS-ASHTTP 3.1.5.2.2).
3. ``sentry.eas.request.parse_request`` reads the query (plain or base64) and
   headers; a request it rejects, one without a protocol version or with a
   body that is not WBXML gets its 4xx. SendMail/SmartReply/SmartForward
   before 14.0 (or any ``message/rfc822`` body) keep the raw MIME instead.
4. The provisioning gate, then the command handler. A command this backend
   does not implement gets Status 137 CommandNotSupported in its own
   namespace at 14.0+ and HTTP 501 otherwise (what Exchange answers for a
   command it does not know).

Every EAS answer carries ``MS-Server-ActiveSync`` (a build per backend type)
and ``X-Demo-Backend-Type``; WBXML answers, even empty ones, carry the WBXML
content type. On shutdown the change hub is closed first, which answers every
held Ping/Sync at once, so ``runner.cleanup()`` never waits on a long poll.

``start_backend`` runs the app on a TCP port (0: any free one) and returns a
``RunningBackend`` with the URL, the state and the control helpers.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import socket
import ssl
from collections.abc import Generator
from types import TracebackType
from typing import Any

from aiohttp import web

from sentry.eas.errors import EasError
from sentry.eas.request import parse_request
from sentry.eas.status import CommonStatus
from sentry.eas.wbxml import Element, decode, encode
from sentry.proxy.connections import BACKLOG

from .eas_folders import folder_sync, get_item_estimate
from .eas_items import item_operations, send_mail
from .eas_ping import ping
from .eas_provision import provision, provisioning_gate, settings
from .eas_sync import sync
from .mailbox import Mailbox, Message
from .state import BackendConfig, BackendState, BackendStats, MailboxSpec
from .wire import Call, Handler, Reply, command_status, version_at_least

__all__ = [
    "BACKEND_STATE",
    "EAS_PATH",
    "BackendConfig",
    "MailboxSpec",
    "RunningBackend",
    "build_backend_app",
    "inject",
    "start_backend",
]

EAS_PATH = "/Microsoft-Server-ActiveSync"
WBXML_TYPE = "application/vnd.ms-sync.wbxml"
BACKEND_STATE = web.AppKey("backend_state", BackendState)
MAX_BODY = 32 * 1024 * 1024
PROTOCOL_COMMANDS = (
    "Sync,SendMail,SmartForward,SmartReply,GetAttachment,GetHierarchy,CreateCollection,"
    "DeleteCollection,MoveCollection,FolderSync,FolderCreate,FolderDelete,FolderUpdate,"
    "MoveItems,GetItemEstimate,MeetingResponse,Search,Settings,Ping,ItemOperations,"
    "Provision,ResolveRecipients,ValidateCert,Find"
)
HANDLERS: dict[str, Handler] = {
    "Provision": provision,
    "Settings": settings,
    "FolderSync": folder_sync,
    "Sync": sync,
    "GetItemEstimate": get_item_estimate,
    "Ping": ping,
    "ItemOperations": item_operations,
    "SendMail": send_mail,
}
_MIME_COMMANDS = frozenset({"SendMail", "SmartReply", "SmartForward"})


def build_backend_app(config: BackendConfig) -> web.Application:
    """The demo backend as an aiohttp application (state at ``app[BACKEND_STATE]``)."""
    # Head limits above the gateway's defaults (gateway.header_limits), so what
    # the gateway accepts reaches the demo backend (a 16 KB Bearer token).
    limits = {"max_line_size": 65536, "max_field_size": 65536}
    app = web.Application(client_max_size=MAX_BODY, handler_args=limits)
    app[BACKEND_STATE] = BackendState(config)
    app.on_shutdown.append(_close_hub)
    app.router.add_get("/_demo/stats", _demo_stats)
    app.router.add_post("/_demo/inject", _demo_inject)
    app.router.add_route("*", "/{tail:.*}", _eas)
    return app


async def _close_hub(app: web.Application) -> None:
    app[BACKEND_STATE].hub.close()


def _common_headers(config: BackendConfig) -> dict[str, str]:
    return {
        "MS-Server-ActiveSync": config.server_build,
        "X-Demo-Backend-Type": config.backend_type,
    }


async def _eas(request: web.Request) -> web.StreamResponse:
    if request.path.rstrip("/").casefold() != EAS_PATH.casefold():
        raise web.HTTPNotFound()
    state = request.app[BACKEND_STATE]
    headers = _common_headers(state.config)
    if request.method == "OPTIONS":
        return _options(state.config)
    if request.method != "POST":
        return web.Response(status=501, headers=headers)
    state.stats.last_authorization = tuple(request.headers.getall("Authorization", ()))
    mailbox = _authenticate(state, request)
    if mailbox is None:
        headers["WWW-Authenticate"] = 'Basic realm="Demo ActiveSync"'
        return web.Response(status=401, headers=headers)
    moved = state.moved.get(mailbox.user)
    if moved is not None:
        state.stats.redirected[mailbox.user] += 1
        state.stats.responses[451] += 1
        location = {"X-MS-Location": moved} if moved else {}
        return web.Response(status=451, headers=headers | location)
    try:
        call = await _call_of(state, request, mailbox)
    except EasError as exc:
        return web.Response(status=exc.http_status, headers=headers, text=exc.message)
    state.stats.requests[(mailbox.user, call.command)] += 1
    reply = provisioning_gate(state, call) or await _run(state, call)
    state.stats.responses[reply.http_status] += 1
    return _response(reply, headers)


def _options(config: BackendConfig) -> web.Response:
    headers = _common_headers(config) | {
        "MS-ASProtocolVersions": ",".join(config.protocol_versions),
        "MS-ASProtocolCommands": PROTOCOL_COMMANDS,
        "Allow": "OPTIONS,POST",
        "Public": "OPTIONS,POST",
    }
    return web.Response(status=200, headers=headers)


def _authenticate(state: BackendState, request: web.Request) -> Mailbox | None:
    """The mailbox the (first) Authorization header proves, as a server reads it."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.strip().partition(" ")
    if scheme.casefold() == "bearer":
        check = state.config.bearer
        name = None if check is None else check(token.strip())
        return None if name is None else state.find(name)
    credentials = _basic_credentials(header)
    return None if credentials is None else state.authenticate(*credentials)


def _basic_credentials(header: str) -> tuple[str, str] | None:
    """(user, password) of an ``Authorization: Basic`` header; UTF-8, else Latin-1
    (Outlook sends ISO-8859-1, phones UTF-8: eas-protocol.md §6.1)."""
    scheme, _, token = header.strip().partition(" ")
    if scheme.casefold() != "basic":
        return None
    try:
        raw = base64.b64decode(token.strip(), validate=True)
    except binascii.Error:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    user, sep, password = text.partition(":")
    return (user, password) if sep else None


async def _call_of(state: BackendState, request: web.Request, mailbox: Mailbox) -> Call:
    """Parse the request line, headers and body into a ``Call`` (EasError on bad input)."""
    parsed = parse_request(request.method, request.rel_url.raw_query_string, request.headers)
    if parsed.command is None:
        raise EasError("no command")
    version = parsed.protocol_version
    if version is None or version not in state.config.protocol_versions:
        raise EasError(f"protocol version {version!r} is not supported by this backend")
    command = parsed.command.value
    raw = await request.read()
    content_type = request.headers.get("Content-Type", "").casefold()
    mime = content_type.startswith("message/rfc822") or (
        command in _MIME_COMMANDS and not version_at_least(version, "14.0")
    )
    body = decode(raw) if raw and not mime else None
    return Call(
        command=command,
        mailbox=mailbox,
        device_id=parsed.device_id,
        device_type=parsed.device_type,
        version=version,
        policy_key=parsed.policy_key,
        params=parsed.params,
        body=body,
        raw=raw,
    )


async def _run(state: BackendState, call: Call) -> Reply:
    handler = HANDLERS.get(call.command)
    if handler is not None:
        return await handler(state, call)
    reply = None
    if call.at_least("14.0"):
        reply = command_status(call.command, CommonStatus.CommandNotSupported)
    return reply or Reply(http_status=501)


def _response(reply: Reply, headers: dict[str, str]) -> web.Response:
    body = reply.body
    data = encode(body) if isinstance(body, Element) else (body or b"")
    return web.Response(
        status=reply.http_status,
        body=data,
        headers=headers | dict(reply.headers),
        content_type=WBXML_TYPE,
    )


# --- Control API (/_demo/) ---


async def _demo_stats(request: web.Request) -> web.Response:
    state = request.app[BACKEND_STATE]
    return web.json_response(
        state.stats.as_json(held=state.hub.held, abandoned=state.hub.abandoned)
    )


async def _demo_inject(request: web.Request) -> web.Response:
    state = request.app[BACKEND_STATE]
    try:
        data = await request.json()
        user, subject, body = str(data["user"]), str(data["subject"]), str(data["body"])
    except (ValueError, KeyError, TypeError):
        raise web.HTTPBadRequest(text='expected JSON {"user", "subject", "body"}') from None
    box = state.find(user)
    if box is None:
        raise web.HTTPNotFound(text=f"no mailbox {user!r}")
    msg = inject(state, box, subject, body, sender=data.get("sender"))
    folder_id = msg.server_id.partition(":")[0]
    return web.json_response({"user": box.user, "folder_id": folder_id, "server_id": msg.server_id})


def inject(
    state: BackendState, box: Mailbox, subject: str, body: str, *, sender: str | None = None
) -> Message:
    """Deliver a new message to ``box``'s Inbox (waking its held Pings and Syncs)."""
    return state.deliver(box, subject, body, sender=sender or '"Demo Sender" <sender@demo.invalid>')


# --- Running it ---


class RunningBackend:
    """A started backend: where it listens, its state, and the test/bench controls."""

    def __init__(self, app: web.Application, runner: web.AppRunner, url: str, port: int) -> None:
        self.app = app
        self.url = url  # scheme://host:port
        self.port = port
        self._runner = runner
        self._stopped = False

    @property
    def eas_url(self) -> str:
        """The full ActiveSync endpoint URL."""
        return self.url + EAS_PATH

    @property
    def state(self) -> BackendState:
        return self.app[BACKEND_STATE]

    @property
    def stats(self) -> BackendStats:
        return self.state.stats

    @property
    def held(self) -> int:
        """Requests (Ping, Sync with Wait) held right now."""
        return self.state.hub.held

    @property
    def abandoned(self) -> int:
        """Held requests that ended because their client closed the connection."""
        return self.state.hub.abandoned

    def mailbox(self, user: str) -> Mailbox:
        """A mailbox by user name or email (KeyError when unknown)."""
        return self.state.mailbox(user)

    def inject_message(
        self, user: str, subject: str, body: str, *, sender: str | None = None
    ) -> str:
        """Add a message to ``user``'s Inbox, wake its held requests; return its ServerId."""
        return inject(self.state, self.mailbox(user), subject, body, sender=sender).server_id

    def move(self, user: str, location: str | None) -> None:
        """Answer ``user``'s requests with 451 + ``X-MS-Location: location``
        (the mailbox moved to another server; "" sends no X-MS-Location);
        None: serve them again."""
        box = self.mailbox(user)
        if location is None:
            self.state.moved.pop(box.user, None)
        else:
            self.state.moved[box.user] = location

    def device_info(self, user: str, device_id: str) -> dict[str, str] | None:
        """The last DeviceInformation seen for (user, DeviceId), if any."""
        key = (self.mailbox(user).user, device_id.upper())
        return self.stats.device_info.get(key)

    async def wait_held(self, count: int = 1, timeout: float = 10.0) -> None:
        """Wait until at least ``count`` requests are held (TimeoutError after ``timeout``)."""
        async with asyncio.timeout(timeout):
            while self.held < count:
                await asyncio.sleep(0.005)

    async def stop(self) -> None:
        """Answer held requests, close connections and free the port (idempotent)."""
        if not self._stopped:
            self._stopped = True
            await self._runner.cleanup()

    async def __aenter__(self) -> RunningBackend:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class _StartingBackend:
    """``start_backend(...)``: await it for a ``RunningBackend``, or ``async with`` it."""

    def __init__(self, config: BackendConfig, **options: Any) -> None:
        self._config = config
        self._options = options
        self._backend: RunningBackend | None = None

    def __await__(self) -> Generator[Any, None, RunningBackend]:
        return _start(self._config, **self._options).__await__()

    async def __aenter__(self) -> RunningBackend:
        self._backend = await _start(self._config, **self._options)
        return self._backend

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._backend is not None:
            await self._backend.stop()


def start_backend(
    config: BackendConfig,
    host: str = "127.0.0.1",
    port: int = 0,
    ssl_context: ssl.SSLContext | None = None,
    *,
    access_log: bool = False,
    sock: socket.socket | None = None,
) -> _StartingBackend:
    """Start the backend on ``host:port`` (0: a free port, read back), or on
    an already bound ``sock`` (see ``faulty.refusing_port``).

    ``backend = await start_backend(cfg)`` (then ``await backend.stop()``) or
    ``async with start_backend(cfg) as backend: ...``.
    """
    return _StartingBackend(
        config, host=host, port=port, ssl_context=ssl_context, access_log=access_log, sock=sock
    )


async def _start(
    config: BackendConfig,
    *,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    access_log: bool,
    sock: socket.socket | None,
) -> RunningBackend:
    app = build_backend_app(config)
    options: dict[str, Any] = {} if access_log else {"access_log": None}
    runner = web.AppRunner(app, shutdown_timeout=5.0, handler_cancellation=True, **options)
    await runner.setup()
    try:
        site: web.BaseSite
        # a backend's accept queue as deep as the gateway's (a storm's
        # reconnects arrive at once; aiohttp's default is 128)
        if sock is not None:
            host = sock.getsockname()[0]
            site = web.SockSite(runner, sock, ssl_context=ssl_context, backlog=BACKLOG)
        else:
            site = web.TCPSite(runner, host, port, ssl_context=ssl_context, backlog=BACKLOG)
        await site.start()
    except BaseException:
        with contextlib.suppress(Exception):
            await runner.cleanup()
        raise
    bound = runner.addresses[0][1]
    scheme = "https" if ssl_context is not None else "http"
    shown = f"[{host}]" if ":" in host else host
    return RunningBackend(app, runner, f"{scheme}://{shown}:{bound}", bound)
