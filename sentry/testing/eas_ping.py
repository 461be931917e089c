"""The Ping command of the demo backend: Direct Push long polls.

Approach. The parameters (HeartbeatInterval, Folders) come from the request,
or from the device's cached ones when the request omits them or has no body
at all (MS-ASCMD 2.2.3.88.1); nothing to go on is Status 3. A heartbeat
outside [min_heartbeat, max_heartbeat] is Status 5 with the violated bound,
too many folders Status 6 with MaxFolders, an unknown folder id Status 7.

A folder the device has synced and that has changed since its latest SyncKey
answers at once with Status 2. Otherwise the request is held on the change
hub: a change in a watched folder answers Status 2 listing the changed
folders; the heartbeat, a newer Ping from the same device (which supersedes
this one, as Exchange does) or server shutdown answer Status 1, so the client
simply pings again. Folders the device never synced are watched for new
changes only.
"""

from __future__ import annotations

from sentry.eas.status import PingStatus
from sentry.eas.wbxml import Element

from .mailbox import diff
from .state import BackendState, PingParams
from .wire import Call, Reply, el, leaf, status

__all__ = ["ping"]

PING = "Ping"


def _ping_status(value: PingStatus, *extra: Element) -> Reply:
    return Reply(el(PING, "Ping", status(PING, value), *extra))


def _changes(folder_ids: list[str]) -> Reply:
    folders = el(PING, "Folders", *(leaf(PING, "Folder", fid) for fid in folder_ids))
    return _ping_status(PingStatus.ChangesFound, folders)


async def ping(state: BackendState, call: Call) -> Reply:
    """The Ping command (see the module comment)."""
    params = _params(state, call)
    if isinstance(params, Reply):
        return params
    state.ping_cache[call.owner] = params
    ids = [fid for fid, _ in params.folders]
    pending = [fid for fid in ids if _has_pending(state, call, fid)]
    if pending:
        return _changes(pending)
    previous = state.held_pings.pop(call.owner, None)
    if previous is not None:
        previous.supersede()
    with state.hub.watch(call.mailbox.user, frozenset(ids)) as waiter:
        state.held_pings[call.owner] = waiter
        try:
            await waiter.wait(params.heartbeat)
        finally:
            if state.held_pings.get(call.owner) is waiter:
                del state.held_pings[call.owner]
    if waiter.changed:
        return _changes(waiter.changed)
    return _ping_status(PingStatus.HeartbeatExpired)


def _has_pending(state: BackendState, call: Call, folder_id: str) -> bool:
    latest = state.sync.latest(call.owner, folder_id)
    folder = call.mailbox.folders.get(folder_id)
    return latest is not None and folder is not None and bool(diff(latest[1], folder.snapshot()))


def _params(state: BackendState, call: Call) -> PingParams | Reply:
    """The effective parameters of this Ping, or the error answer."""
    cached = state.ping_cache.get(call.owner)
    body = call.body
    if body is None:
        return cached or _ping_status(PingStatus.MissingParameters)
    if body.tag != "Ping" or body.namespace != PING:
        return _ping_status(PingStatus.SyntaxError)
    beat_text = body.child_text("HeartbeatInterval", PING)
    if beat_text is not None and not beat_text.isdigit():
        return _ping_status(PingStatus.SyntaxError)
    folders_el = body.find("Folders", PING)
    beat = int(beat_text) if beat_text else (cached.heartbeat if cached else None)
    folders = _folders(folders_el) if folders_el else (cached.folders if cached else ())
    if beat is None or not folders:
        return _ping_status(PingStatus.MissingParameters)
    return _check(state, call, PingParams(beat, folders))


def _folders(folders: Element) -> tuple[tuple[str, str], ...]:
    return tuple(
        (f.child_text("Id", PING) or "", f.child_text("Class", PING) or "")
        for f in folders.iter_children("Folder", PING)
    )


def _check(state: BackendState, call: Call, params: PingParams) -> PingParams | Reply:
    config = state.config
    if params.heartbeat < config.min_heartbeat:
        bound = leaf(PING, "HeartbeatInterval", config.min_heartbeat)
        return _ping_status(PingStatus.HeartbeatOutOfRange, bound)
    if params.heartbeat > config.max_heartbeat:
        bound = leaf(PING, "HeartbeatInterval", config.max_heartbeat)
        return _ping_status(PingStatus.HeartbeatOutOfRange, bound)
    if len(params.folders) > config.max_ping_folders:
        limit = leaf(PING, "MaxFolders", config.max_ping_folders)
        return _ping_status(PingStatus.TooManyFolders, limit)
    if any(fid not in call.mailbox.folders for fid, _ in params.folders):
        return _ping_status(PingStatus.FolderSyncRequired)
    return params
