"""``sentry demo-client``: sync one mailbox through the gateway, as a phone would.

Approach. It drives ``EasTestClient`` through the real protocol steps a mail
client takes: two-phase Provision (with DeviceInformation), FolderSync, then
Sync of the Inbox (SyncKey 0, then the items), and prints what each step got.
A refusal is printed as the EAS status the gateway answered, so a new user can
see a block, a wipe or a fail-closed decision with their own eyes.
"""

from __future__ import annotations

import argparse
import asyncio

import aiohttp

from sentry.eas.status import CommonStatus

from .eas_client import EasResponse, EasTestClient, ProvisionFailed

__all__ = ["SyncRefused", "client_parser", "demo_client_main", "sync_inbox"]

FOLDERSYNC = '<FolderSync xmlns="FolderHierarchy"><SyncKey>0</SyncKey></FolderSync>'
SYNC = (
    '<Sync xmlns="AirSync"><Collections><Collection><SyncKey>{key}</SyncKey>'
    "<CollectionId>{folder}</CollectionId></Collection></Collections></Sync>"
)
INBOX_TYPE = "2"


def client_parser() -> argparse.ArgumentParser:
    """The options of ``sentry demo-client``."""
    p = argparse.ArgumentParser(
        prog="sentry demo-client",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--url", default="https://127.0.0.1:8443", help="the gateway")
    p.add_argument("--user", required=True, help="the mailbox user")
    p.add_argument("--password", required=True, help="the mailbox password")
    p.add_argument("--device-id", default="DEMOPHONE0001", help="the EAS DeviceId to send")
    p.add_argument("--device-type", default="iPhone", help="the EAS DeviceType to send")
    p.add_argument("--version", default="16.1", help="the EAS protocol version to speak")
    p.add_argument("--insecure", action="store_true", help="accept a self-signed certificate")
    return p


def _refused(step: str, r: EasResponse) -> str | None:
    if r.status != 200:
        return f"{step}: HTTP {r.status}"
    status = r.text("Status") if r.raw else None
    if status not in (None, "1"):
        try:
            name = CommonStatus(int(status)).name
        except ValueError:
            name = "command status"
        return f"{step}: refused with Status {status} ({name})"
    return None


class SyncRefused(Exception):
    """A step of ``sync_inbox`` was refused; the message says which and how."""


async def sync_inbox(c: EasTestClient) -> list[str]:
    """FolderSync, then Sync of the Inbox (key 0, then the items), as an
    already provisioned phone does; the subjects of the Inbox's items."""
    folders = await c.post("FolderSync", FOLDERSYNC)
    if problem := _refused("FolderSync", folders):
        raise SyncRefused(problem)
    inbox = _inbox_id(folders)
    first = await c.post("Sync", SYNC.format(key="0", folder=inbox))
    if problem := _refused("Sync", first):
        raise SyncRefused(problem)
    items = await c.post("Sync", SYNC.format(key=_sync_key(first), folder=inbox))
    if problem := _refused("Sync", items):
        raise SyncRefused(problem)
    return _subjects(items)


async def _run(args: argparse.Namespace) -> int:
    connector = aiohttp.TCPConnector(ssl=not args.insecure)
    async with aiohttp.ClientSession(connector=connector) as session:
        c = EasTestClient(
            session, f"{args.url.rstrip('/')}/Microsoft-Server-ActiveSync", args.user,
            args.password, device_id=args.device_id, device_type=args.device_type,
            version=args.version,
        )  # fmt: skip
        try:
            key = await c.provision()
        except ProvisionFailed as exc:
            print(_refused("Provision", exc.response) or f"Provision: {exc}")
            return 1
        print(f"Provision: ok, policy key {key}")
        folders = await c.post("FolderSync", FOLDERSYNC)
        if problem := _refused("FolderSync", folders):
            print(problem)
            return 1
        inbox = _inbox_id(folders)
        print(f"FolderSync: ok, Inbox is folder {inbox}")
        first = await c.post("Sync", SYNC.format(key="0", folder=inbox))
        if problem := _refused("Sync", first):
            print(problem)
            return 1
        items = await c.post("Sync", SYNC.format(key=_sync_key(first), folder=inbox))
        for subject in _subjects(items):
            print(f"  Inbox: {subject}")
        return 0


def _inbox_id(folders: EasResponse) -> str:
    changes = folders.element.find("Changes")
    for add in changes.iter_children("Add") if changes else ():
        if add.child_text("Type") == INBOX_TYPE:
            return add.child_text("ServerId") or ""
    return ""


def _sync_key(r: EasResponse) -> str:
    node = r.element.find_path("Collections", "Collection", "SyncKey")
    return node.text or "0" if node else "0"


def _subjects(r: EasResponse) -> list[str]:
    if not r.raw:
        return []
    commands = r.element.find_path("Collections", "Collection", "Commands")
    out = []
    for add in commands.iter_children("Add") if commands else ():
        data = add.find("ApplicationData")
        out.append((data.child_text("Subject") if data else None) or "(no subject)")
    return out


def demo_client_main(argv: list[str]) -> int:
    """Entry point of ``sentry demo-client``."""
    try:
        args = client_parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return asyncio.run(_run(args))
    except aiohttp.ClientError as exc:
        print(f"sentry: error: cannot reach {args.url}: {exc}")
        return 2
