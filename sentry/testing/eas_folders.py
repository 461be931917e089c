"""FolderSync and GetItemEstimate of the demo backend.

Approach. Both are pure diffs over the sync-key store of ``mailbox.py``.
FolderSync keeps the hierarchy snapshot of each device under the collection
id ``""``: SyncKey 0 resets it and returns every folder as an Add (with the
MS-ASCMD folder types: 2 Inbox, 3 Drafts, 4 Deleted Items, 5 Sent Items,
8 Calendar, 9 Contacts); a known key returns the differences, keeping the key
when there are none (as Exchange does); an unknown key is Status 9.
GetItemEstimate counts what the next Sync with the given key would bring.
"""

from __future__ import annotations

from enum import IntEnum

from sentry.eas.status import FolderStatus
from sentry.eas.wbxml import Element

from .mailbox import HIERARCHY, Folder, diff
from .state import BackendState
from .wire import Call, Reply, el, leaf, status

__all__ = ["EstimateStatus", "folder_sync", "get_item_estimate"]

FH, GIE, AS = "FolderHierarchy", "GetItemEstimate", "AirSync"


class EstimateStatus(IntEnum):
    """GetItemEstimate Status (MS-ASCMD 2.2.3.177.7)."""

    Success = 1
    InvalidCollection = 2
    SyncStateNotPrimed = 3
    InvalidSyncKey = 4


def _folder_status(value: FolderStatus) -> Reply:
    return Reply(el(FH, "FolderSync", status(FH, value)))


def _folder_element(tag: str, folder: Folder) -> Element:
    return el(
        FH,
        tag,
        leaf(FH, "ServerId", folder.server_id),
        leaf(FH, "ParentId", folder.parent_id),
        leaf(FH, "DisplayName", folder.name),
        leaf(FH, "Type", folder.type),
    )


async def folder_sync(state: BackendState, call: Call) -> Reply:
    """FolderSync: the full hierarchy for key 0, the differences for a known key."""
    body = call.body
    key = None if body is None or body.tag != "FolderSync" else body.child_text("SyncKey", FH)
    if key is None:
        return _folder_status(FolderStatus.MalformedRequest)
    box, owner = call.mailbox, call.owner
    current = box.hierarchy()
    if key == "0":
        known: dict[str, int] = {}
        key = state.sync.reset(owner, HIERARCHY, current)
    else:
        found = state.sync.lookup(owner, HIERARCHY, key)
        if found is None:
            return _folder_status(FolderStatus.InvalidSyncKey)
        known = found
    changes = diff(known, current)
    if changes:
        key = state.sync.issue(owner, HIERARCHY, current)
    entries = [
        *(_folder_element("Add", box.folders[sid]) for sid in changes.added),
        *(_folder_element("Update", box.folders[sid]) for sid in changes.changed),
        *(el(FH, "Delete", leaf(FH, "ServerId", sid)) for sid in changes.deleted),
    ]
    root = el(
        FH,
        "FolderSync",
        status(FH, FolderStatus.Success),
        leaf(FH, "SyncKey", key),
        el(FH, "Changes", leaf(FH, "Count", len(entries)), *entries),
    )
    return Reply(root)


async def get_item_estimate(state: BackendState, call: Call) -> Reply:
    """GetItemEstimate: per collection, how many changes the next Sync would send."""
    body = call.body
    collections = None if body is None else body.find("Collections", GIE)
    if collections is None:
        return Reply(el(GIE, "GetItemEstimate", status(GIE, EstimateStatus.InvalidCollection)))
    answers = [_estimate(state, call, c) for c in collections.iter_children("Collection", GIE)]
    return Reply(el(GIE, "GetItemEstimate", *answers))


def _estimate(state: BackendState, call: Call, collection: Element) -> Element:
    collection_id = collection.child_text("CollectionId", GIE) or ""
    key = collection.child_text("SyncKey", AS) or collection.child_text("SyncKey", GIE) or "0"
    folder = call.mailbox.folders.get(collection_id)
    known = state.sync.lookup(call.owner, collection_id, key) if key != "0" else None
    if folder is None:
        code = EstimateStatus.InvalidCollection
    elif key == "0":
        code = EstimateStatus.SyncStateNotPrimed
    elif known is None:
        code = EstimateStatus.InvalidSyncKey
    else:
        code = EstimateStatus.Success
    estimate = None
    if folder is not None and known is not None:
        estimate = leaf(GIE, "Estimate", len(diff(known, folder.snapshot())))
    return el(
        GIE,
        "Response",
        status(GIE, code),
        el(GIE, "Collection", leaf(GIE, "CollectionId", collection_id), estimate),
    )
