"""The Sync command of the demo backend.

Approach. Each Collection of the request is answered independently from the
sync-key store (``mailbox.SyncStates``):

* SyncKey 0 resets the collection and returns a new key with no items;
* a known key: the client's own Commands (Add, Change of Read, Delete,
  Fetch) are applied first and folded into the client's snapshot so they are
  not echoed back; then ``diff(snapshot, folder)`` gives the server changes,
  newest additions first, cut at WindowSize (default 100, at most 512) with
  MoreAvailable when more remain; a new key is issued only when the response
  carries something, otherwise the key is kept;
* an unknown key is Status 3, an unknown CollectionId Status 12.

An empty request body reuses the device's last Sync request with each
collection's latest key (and without its client Commands); with no cached
request it is Status 13. With Wait (minutes) or HeartbeatInterval (seconds)
and nothing to report, the request is held on the change hub until a watched
folder changes (the collections are then answered again) or the interval ends
(HTTP 200 with an empty body, MS-ASCMD 2.2.1.21). Out-of-range values get
Status 14 with Limit; both together Status 4.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from sentry.eas.status import SyncStatus
from sentry.eas.wbxml import Element

from .eas_items import BodyPreference, body_preference, email_fields
from .mailbox import Folder, FolderType, diff
from .state import BackendConfig, BackendState
from .wire import Call, Reply, el, leaf, status

__all__ = ["sync"]

AS, EM, ASB = "AirSync", "Email", "AirSyncBase"
DEFAULT_WINDOW = 100
MAX_WINDOW = 512


@dataclass(frozen=True, slots=True)
class _Outcome:
    element: Element
    news: bool  # the client must see this collection (new key, items, errors)


def _sync_status(value: SyncStatus) -> Reply:
    return Reply(el(AS, "Sync", status(AS, value)))


def _answer(outcomes: list[_Outcome]) -> Reply:
    return Reply(el(AS, "Sync", el(AS, "Collections", *(o.element for o in outcomes))))


async def sync(state: BackendState, call: Call) -> Reply:
    """The Sync command (see the module comment)."""
    request = _request_of(state, call)
    if isinstance(request, Reply):
        return request
    hold = _hold_seconds(state.config, request)
    if isinstance(hold, Reply):
        return hold
    collections_el = request.find("Collections", AS)
    collections = [] if collections_el is None else list(collections_el.iter_children("Collection"))
    if not collections:
        return _sync_status(SyncStatus.ProtocolError)
    state.sync_cache[call.owner] = request
    window = _window(request.child_text("WindowSize", AS), DEFAULT_WINDOW)
    outcomes = [_collection(state, call, c, window, client=True) for c in collections]
    if hold is None or any(o.news for o in outcomes):
        return _answer(outcomes)
    return await _hold(state, call, collections, window, hold)


async def _hold(
    state: BackendState, call: Call, collections: list[Element], window: int, seconds: int
) -> Reply:
    ids = frozenset(c.child_text("CollectionId", AS) or "" for c in collections)
    with state.hub.watch(call.mailbox.user, ids) as waiter:
        await waiter.wait(seconds)
    if waiter.closed or not waiter.changed:
        return Reply()
    outcomes = [_collection(state, call, c, window, client=False) for c in collections]
    return _answer(outcomes) if any(o.news for o in outcomes) else Reply()


def _request_of(state: BackendState, call: Call) -> Element | Reply:
    if call.body is None:
        cached = state.sync_cache.get(call.owner)
        if cached is None:
            return _sync_status(SyncStatus.RequestIncomplete)
        return _with_latest_keys(state, call, cached)
    if call.body.tag != "Sync" or call.body.namespace != AS:
        return _sync_status(SyncStatus.ProtocolError)
    return call.body


def _with_latest_keys(state: BackendState, call: Call, request: Element) -> Element:
    """The cached request with each collection's newest key and no client Commands."""

    def refresh(coll: Element) -> Element:
        latest = state.sync.latest(call.owner, coll.child_text("CollectionId", AS) or "")
        key = latest[0] if latest else coll.child_text("SyncKey", AS) or "0"
        kept = [c for c in coll.content if not _is(c, "SyncKey", "Commands")]
        return el(AS, "Collection", leaf(AS, "SyncKey", key), *kept)

    collections = request.find("Collections", AS) or el(AS, "Collections")
    refreshed = el(AS, "Collections", *map(refresh, collections.iter_children("Collection", AS)))
    return el(AS, "Sync", refreshed, *(c for c in request.content if not _is(c, "Collections")))


def _is(content: object, *tags: str) -> bool:
    return isinstance(content, Element) and content.namespace == AS and content.tag in tags


def _window(text: str | None, default: int) -> int:
    return min(int(text), MAX_WINDOW) if text and text.isdigit() and int(text) > 0 else default


def _hold_seconds(config: BackendConfig, request: Element) -> int | Reply | None:
    wait, beat = request.child_text("Wait", AS), request.child_text("HeartbeatInterval", AS)
    if wait is None and beat is None:
        return None
    if wait is not None and beat is not None:
        return _sync_status(SyncStatus.ProtocolError)
    raw, unit = (wait, 60) if wait is not None else (beat, 1)
    if raw is None or not raw.isdigit():
        return _sync_status(SyncStatus.ProtocolError)
    seconds = int(raw) * unit
    if config.min_heartbeat <= seconds <= config.max_heartbeat:
        return seconds
    limit = -(-config.min_heartbeat // unit) if seconds < config.min_heartbeat else None
    limit = limit if limit is not None else config.max_heartbeat // unit
    root = el(AS, "Sync", status(AS, SyncStatus.InvalidWaitOrHeartbeat), leaf(AS, "Limit", limit))
    return Reply(root)


def _collection_el(
    key: str, collection_id: str, code: SyncStatus, *rest: Element | None
) -> Element:
    return el(
        AS,
        "Collection",
        leaf(AS, "SyncKey", key),
        leaf(AS, "CollectionId", collection_id),
        status(AS, code),
        *rest,
    )


def _collection(
    state: BackendState, call: Call, coll: Element, window: int, *, client: bool
) -> _Outcome:
    cid = coll.child_text("CollectionId", AS) or ""
    key = coll.child_text("SyncKey", AS) or "0"
    folder = call.mailbox.folders.get(cid)
    if folder is None:
        return _Outcome(_collection_el(key, cid, SyncStatus.FolderHierarchyChanged), True)
    if key == "0":
        new_key = state.sync.reset(call.owner, cid, {})
        return _Outcome(_collection_el(new_key, cid, SyncStatus.Success), True)
    found = state.sync.lookup(call.owner, cid, key)
    if found is None:
        return _Outcome(_collection_el("0", cid, SyncStatus.InvalidSyncKey), True)
    known = dict(found)
    pref = body_preference(coll.find("Options", AS))
    responses = _apply_client(state, call, folder, coll, known, pref) if client else []
    window = _window(coll.child_text("WindowSize", AS), window)
    get_changes = coll.child_text("GetChanges", AS) != "0"
    commands, more = _server_changes(folder, known, window, pref) if get_changes else ([], False)
    if not responses and not commands:
        return _Outcome(_collection_el(key, cid, SyncStatus.Success), False)
    new_key = state.sync.issue(call.owner, cid, known)
    return _Outcome(
        _collection_el(
            new_key,
            cid,
            SyncStatus.Success,
            el(AS, "Responses", *responses) if responses else None,
            el(AS, "MoreAvailable") if more else None,
            el(AS, "Commands", *commands) if commands else None,
        ),
        True,
    )


def _server_changes(
    folder: Folder, known: dict[str, int], window: int, pref: BodyPreference
) -> tuple[list[Element], bool]:
    """Up to ``window`` server changes as Commands; ``known`` is updated to match."""
    changes = diff(known, folder.snapshot())
    pending = [
        *(("Add", sid) for sid in reversed(changes.added)),
        *(("Change", sid) for sid in changes.changed),
        *(("Delete", sid) for sid in changes.deleted),
    ]
    commands = [_server_command(folder, known, kind, sid, pref) for kind, sid in pending[:window]]
    return commands, len(pending) > window


def _server_command(
    folder: Folder, known: dict[str, int], kind: str, sid: str, pref: BodyPreference
) -> Element:
    if kind == "Delete":
        known.pop(sid, None)
        return el(AS, "Delete", leaf(AS, "ServerId", sid))
    msg = folder.items[sid]
    known[sid] = msg.version
    data = email_fields(msg, pref) if kind == "Add" else (leaf(EM, "Read", int(msg.read)),)
    return el(AS, kind, leaf(AS, "ServerId", sid), el(AS, "ApplicationData", *data))


@dataclass(slots=True)
class _ClientBatch:
    """What the client's Commands of one collection are applied against."""

    state: BackendState
    call: Call
    folder: Folder
    known: dict[str, int]  # the client's snapshot, updated as commands apply
    pref: BodyPreference
    as_moves: bool  # DeletesAsMoves (default true)

    def changed(self, folder_id: str) -> None:
        self.state.changed(self.call.mailbox, folder_id)


def _apply_client(
    state: BackendState,
    call: Call,
    folder: Folder,
    coll: Element,
    known: dict[str, int],
    pref: BodyPreference,
) -> list[Element]:
    """Apply the client's Commands; return the Responses entries they need."""
    commands = coll.find("Commands", AS)
    if commands is None:
        return []
    as_moves = coll.child_text("DeletesAsMoves", AS) != "0"
    batch = _ClientBatch(state, call, folder, known, pref, as_moves)
    answers = [_client_command(batch, command) for command in commands.children]
    return [a for a in answers if a is not None]


def _client_command(batch: _ClientBatch, command: Element) -> Element | None:
    handler = _CLIENT_COMMANDS.get(command.tag)
    return None if handler is None else handler(batch, command)


def _not_found(tag: str, sid: str) -> Element:
    return el(AS, tag, leaf(AS, "ServerId", sid), status(AS, SyncStatus.ObjectNotFound))


def _client_change(batch: _ClientBatch, command: Element) -> Element | None:
    sid = command.child_text("ServerId", AS) or ""
    msg = batch.folder.items.get(sid)
    if msg is None:
        return _not_found("Change", sid)
    read = command.find_path("ApplicationData", "Read")
    if read is not None and msg.mark_read(read.text == "1"):
        batch.changed(batch.folder.server_id)
    batch.known[sid] = msg.version
    return None


def _client_delete(batch: _ClientBatch, command: Element) -> Element | None:
    sid = command.child_text("ServerId", AS) or ""
    msg = batch.folder.items.pop(sid, None)
    if msg is None:
        return _not_found("Delete", sid)
    batch.known.pop(sid, None)
    if batch.as_moves and batch.folder.type != FolderType.DeletedItems:
        trash = batch.call.mailbox.folder(FolderType.DeletedItems)
        moved = trash.add(
            msg.subject, msg.body, sender=msg.sender, to=msg.to, received=msg.received
        )
        moved.read = msg.read
        batch.changed(trash.server_id)
    batch.changed(batch.folder.server_id)
    return None


def _client_add(batch: _ClientBatch, command: Element) -> Element | None:
    data = command.find("ApplicationData", AS) or el(AS, "ApplicationData")
    body = data.find_path("Body", "Data")
    msg = batch.folder.add(
        data.child_text("Subject", EM) or "",
        (None if body is None else body.text) or "",
        sender=batch.call.mailbox.address,
        to=data.child_text("To", EM) or "",
        received=dt.datetime.now(dt.UTC),
    )
    msg.read = True
    batch.known[msg.server_id] = msg.version
    batch.changed(batch.folder.server_id)
    return el(
        AS,
        "Add",
        leaf(AS, "ClientId", command.child_text("ClientId", AS) or ""),
        leaf(AS, "ServerId", msg.server_id),
        status(AS, SyncStatus.Success),
    )


def _client_fetch(batch: _ClientBatch, command: Element) -> Element | None:
    sid = command.child_text("ServerId", AS) or ""
    msg = batch.folder.items.get(sid)
    if msg is None:
        return _not_found("Fetch", sid)
    data = el(AS, "ApplicationData", *email_fields(msg, batch.pref))
    return el(AS, "Fetch", leaf(AS, "ServerId", sid), status(AS, SyncStatus.Success), data)


_CLIENT_COMMANDS: dict[str, Callable[[_ClientBatch, Element], Element | None]] = {
    "Change": _client_change,
    "Delete": _client_delete,
    "Add": _client_add,
    "Fetch": _client_fetch,
}
