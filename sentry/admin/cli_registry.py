"""``sentry admin`` commands for the registry and configuration.

Users, managed devices, Exchange settings, labels, preferences, pools and the
audit log: one leaf command per API route (see ``cli_base`` for the shape of
a command). ``users set``, ``prefs set`` and ``labels set`` keep what is not
given; label membership changes only through explicit ``--add``/``--remove``
or ``labels add-device``/``remove-device`` (and ``devices labels --add``).
"""

from __future__ import annotations

import argparse
from typing import Any

from sentry.model import NewDeviceAccess, Platform, RefusalStyle, UserSource, ViolationKind

from .cli_base import (
    Builder,
    Command,
    Render,
    add_note,
    add_paging,
    get_command,
    items_render,
    page_render,
    quote_path,
    with_note,
)
from .cli_client import AdminTarget, ApiFailure
from .cli_format import COLUMNS, cell, record, table
from .cli_identity import add_backend_type_commands, add_device_reset

__all__ = ["add_registry_commands"]


def add_registry_commands(b: Builder) -> None:
    """Register the users, devices, push, prefs, pools and audit commands."""
    _add_users(b, b.group("users", "directory users"))
    devices = b.group("devices", "managed devices")
    _add_devices(b, devices)
    add_device_reset(b, devices)
    add_backend_type_commands(b)
    _add_settings(b, b.group("exchange-settings", "Exchange settings (push method)"))
    _add_labels(b, b.group("labels", "labels (apply Exchange settings to devices)"))
    _add_prefs(b, b.group("prefs", "preferences"))
    b.leaf(b.top, "pools", "backend pools: each server's state, why it is down, last check", _pools)
    p = b.leaf(b.top, "audit", "the audit log, newest first (filtered)", _audit)
    p.add_argument("--by", metavar="ACTOR", help="only entries by this actor (exact)")
    p.add_argument("--target", help="only entries whose target contains this (a DeviceId, a user)")
    p.add_argument("--since", help="from this time on (ISO 8601, e.g. 2026-12-01 or ...T08:00Z)")
    p.add_argument("--until", help="before this time (ISO 8601)")
    add_paging(p)


# --- users and devices ---


def _add_users(b: Builder, subs: Any) -> None:
    p = b.leaf(subs, "list", "list users", _users_list)
    p.add_argument("--q", help="a part of the principal, email or name")
    add_paging(p)
    p = b.leaf(subs, "show", "one user, with devices and associations", _users_show)
    p.add_argument("principal", help=_PRINCIPAL)
    p = b.leaf(subs, "set", "create or change a user (fields not given are kept)", _users_set)
    p.add_argument("principal", help=_PRINCIPAL)
    p.add_argument("--email", help="the user's email address")
    p.add_argument("--display-name", help="the user's display name")
    p.add_argument(
        "--source", choices=[s.value for s in UserSource], help="where the entry is from"
    )
    for i in range(1, 5):
        p.add_argument(f"--custom{i}", help=f"$USER_CUSTOM{i}$ ('' clears it)")
    p.add_argument(
        "--alias", action="append", default=None, help="another name of the user (repeat; replaces)"
    )
    add_note(p)
    p = b.leaf(subs, "delete", "delete a user", _users_delete)
    p.add_argument("principal", help=_PRINCIPAL)
    add_note(p)


_PRINCIPAL = "the user (bob, bob@corp.example, CORP\\bob)"
_DEVICE = "the managed device id"


def _users_list(t: AdminTarget, args: argparse.Namespace) -> tuple[Any, Render]:
    query = {"q": args.q, "offset": args.offset, "limit": args.limit}
    return t.call("GET", "/api/users", query=query), page_render("users")


def _users_show(t: AdminTarget, args: argparse.Namespace) -> tuple[Any, Render]:
    return t.call("GET", f"/api/users/{quote_path(args.principal)}"), record


_USER_FIELDS = (
    *("email", "display_name", "source", "custom1", "custom2", "custom3", "custom4"),
    "aliases",
)


def _users_set(t: AdminTarget, args: argparse.Namespace) -> tuple[Any, Render]:
    path = f"/api/users/{quote_path(args.principal)}"
    try:
        current = t.call("GET", path)
    except ApiFailure as exc:
        if exc.status != 404:
            raise
        current = {}
    body = {k: current[k] for k in _USER_FIELDS if k in current}
    given = {k: getattr(args, "alias" if k == "aliases" else k) for k in _USER_FIELDS}
    body |= {k: v for k, v in given.items() if v is not None}
    return t.call("PUT", path, with_note(args, body)), record


def _users_delete(t: AdminTarget, args: argparse.Namespace) -> tuple[Any, Render]:
    answer = t.call("DELETE", f"/api/users/{quote_path(args.principal)}", with_note(args, {}))
    return answer, lambda a: f"deleted user {a['deleted']}"


def _add_devices(b: Builder, subs: Any) -> None:
    p = b.leaf(subs, "list", "list managed devices", _devices_list)
    p.add_argument("--owner", help="only devices of this owner")
    add_paging(p)
    p = b.leaf(
        subs, "show", "one device, its labels, pushed accounts and associations", _devices_show
    )
    p.add_argument("id", help=_DEVICE)
    p = b.leaf(subs, "register", "register a managed device", _devices_register)
    p.add_argument("id", help=_DEVICE)
    p.add_argument("--owner", required=True, help="the owner's principal")
    p.add_argument("--platform", choices=[x.value for x in Platform], default="other", help="OS")
    p.add_argument("--eas-id", action="append", default=[], help="an EAS DeviceId (repeat)")
    p.add_argument("--label", action="append", default=[], help="a label it is in (repeat)")
    add_note(p)
    p = b.leaf(subs, "compliance", "set violations (none given: compliant)", _devices_compliance)
    p.add_argument("id", help=_DEVICE)
    p.add_argument(
        "--violation",
        action="append",
        default=[],
        metavar="KIND[:DETAIL]",
        help="a violation, with free text after a colon (repeat); KIND is one of: "
        + ", ".join(k.value for k in ViolationKind),
    )
    add_note(p)
    p = b.leaf(subs, "retire", "retire a device", _devices_post("retire"))
    p.add_argument("id", help=_DEVICE)
    add_note(p)
    p = b.leaf(subs, "labels", "put a device in labels or take it out", _devices_labels)
    p.add_argument("id", help=_DEVICE)
    p.add_argument("--add", action="append", default=[], help="a label to put it in (repeat)")
    p.add_argument("--remove", action="append", default=[], help="a label to take it out of")
    add_note(p)


def _device_text(answer: Any) -> str:
    return record(answer["device"]) + f"\nheld polls ended: {answer['polls_ended']}"


def _devices_list(t: AdminTarget, args: argparse.Namespace) -> tuple[Any, Render]:
    query = {"owner": args.owner, "offset": args.offset, "limit": args.limit}
    return t.call("GET", "/api/devices", query=query), page_render("devices")


def _devices_show(t: AdminTarget, args: argparse.Namespace) -> tuple[Any, Render]:
    return t.call("GET", f"/api/devices/{quote_path(args.id)}"), record


def _devices_register(t: AdminTarget, args: argparse.Namespace) -> tuple[Any, Render]:
    body = {"id": args.id, "owner": args.owner, "platform": args.platform}
    body |= {"eas_device_ids": args.eas_id, "labels": args.label}
    return t.call("POST", "/api/devices", with_note(args, body)), _device_text


def _devices_compliance(t: AdminTarget, args: argparse.Namespace) -> tuple[Any, Render]:
    kinds: list[str] = []
    details: dict[str, str] = {}
    for text in args.violation:
        kind, colon, detail = text.partition(":")
        kinds.append(kind.strip())
        if colon and detail.strip():
            details[kind.strip()] = detail.strip()
    body = with_note(args, {"violations": kinds} | ({"details": details} if details else {}))
    return t.call("PUT", f"/api/devices/{quote_path(args.id)}/compliance", body), _device_text


def _devices_post(action: str) -> Command:
    def run(t: AdminTarget, args: argparse.Namespace) -> tuple[Any, Render]:
        body = with_note(args, {})
        return t.call("POST", f"/api/devices/{quote_path(args.id)}/{action}", body), _device_text

    return run


def _devices_labels(t: AdminTarget, args: argparse.Namespace) -> tuple[Any, Render]:
    body = with_note(args, _moves(args))
    return t.call("POST", f"/api/devices/{quote_path(args.id)}/labels", body), _device_text


def _moves(args: argparse.Namespace) -> dict[str, list[str]]:
    from sentry.errors import CliError

    if not args.add and not args.remove:
        raise CliError("give --add or --remove (membership is never replaced as a whole)")
    return {"add": args.add, "remove": args.remove}


# --- push method, preferences, pools, audit ---


def _add_settings(b: Builder, subs: Any) -> None:
    base = "/api/exchange-settings"
    b.leaf(subs, "list", "list Exchange settings", get_command(base, items_render("settings")))
    p = b.leaf(subs, "set", "create or replace an Exchange setting", _setting_set)
    p.add_argument("name", help="the setting's name")
    p.add_argument("--user-name", required=True, help="template, e.g. $USER_CUSTOM1$")
    p.add_argument("--email", required=True, help="template, e.g. $USER_CUSTOM2$")
    p.add_argument("--server", help="the server devices use (default: the gateway's FQDN)")
    p.add_argument(
        "--priority",
        type=int,
        help="Exchange App Priority, 1 first (an Android device takes the first ones); "
        "default: after the others (a replaced setting keeps its own)",
    )
    add_note(p)
    p = b.leaf(
        subs, "delete", "delete an Exchange setting (not while a label applies it)", _delete(base)
    )
    p.add_argument("name", help="the setting's name")
    add_note(p)


def _setting_set(t: AdminTarget, args: argparse.Namespace) -> tuple[Any, Render]:
    body = {"user_name": args.user_name, "email": args.email}
    body |= {} if args.server is None else {"server": args.server}
    body |= {} if args.priority is None else {"priority": args.priority}
    path = f"/api/exchange-settings/{quote_path(args.name)}"
    return t.call("PUT", path, with_note(args, body)), record


def _add_labels(b: Builder, subs: Any) -> None:
    base = "/api/labels"
    b.leaf(
        subs,
        "list",
        "list labels, their settings and devices",
        get_command(base, items_render("labels")),
    )
    p = b.leaf(subs, "set", "create a label or change its settings (devices are kept)", _label_set)
    p.add_argument("name", help="the label's name")
    p.add_argument(
        "--setting",
        action="append",
        help="an Exchange setting it applies (repeat; replaces the list)",
    )
    p.add_argument("--add", action="append", default=[], help="a device to put in it (repeat)")
    p.add_argument("--remove", action="append", default=[], help="a device to take out (repeat)")
    add_note(p)
    for name, field, text in (
        ("add-device", "add", "put devices in a label"),
        ("remove-device", "remove", "take devices out of a label"),
    ):
        p = b.leaf(subs, name, text, _label_members(field))
        p.add_argument("name", help="the label's name")
        p.add_argument("devices", nargs="+", metavar="DEVICE", help="managed device ids")
        add_note(p)
    p = b.leaf(subs, "delete", "delete a label (and take it off its devices)", _delete(base))
    p.add_argument("name", help="the label's name")
    add_note(p)


def _label_set(t: AdminTarget, args: argparse.Namespace) -> tuple[Any, Render]:
    path = f"/api/labels/{quote_path(args.name)}"
    body: dict[str, Any] = {"add": args.add, "remove": args.remove}
    if args.setting is None:
        current = next(
            (lb for lb in t.call("GET", "/api/labels")["items"] if lb["name"] == args.name), None
        )
        body["settings"] = current["settings"] if current is not None else []
    else:
        body["settings"] = args.setting
    return t.call("PUT", path, with_note(args, body)), record


def _label_members(field: str) -> Command:
    def run(t: AdminTarget, args: argparse.Namespace) -> tuple[Any, Render]:
        body = with_note(args, {field: args.devices})
        return t.call("POST", f"/api/labels/{quote_path(args.name)}/devices", body), record

    return run


def _delete(base: str) -> Command:
    def run(t: AdminTarget, args: argparse.Namespace) -> tuple[Any, Render]:
        answer = t.call("DELETE", f"{base}/{quote_path(args.name)}", with_note(args, {}))
        return answer, lambda a: f"deleted {a['deleted']}"

    return run


def _add_prefs(b: Builder, subs: Any) -> None:
    b.leaf(subs, "show", "show the preferences", get_command("/api/preferences", record))
    p = b.leaf(subs, "set", "change preferences (others are kept)", _prefs_set)
    p.add_argument("--auto-block", choices=("on", "off"), help="auto-block unregistered devices")
    p.add_argument("--max-devices-per-mailbox", metavar="N|none", help="the newest over it: 177")
    p.add_argument("--max-mailboxes-per-device", metavar="N|none", help="a limit, or none")
    p.add_argument(
        "--refusal-style", choices=[s.value for s in RefusalStyle], help="how refusals look"
    )
    p.add_argument(
        "--new-device-access",
        choices=[a.value for a in NewDeviceAccess],
        help="new devices while the store cannot be written",
    )
    p.add_argument(
        "--compliance-overrides-allow",
        choices=("on", "off"),
        help="a non-compliant device is refused even where an admin allowed it",
    )
    p.add_argument(
        "--use-file",
        action="append",
        default=[],
        metavar="NAME",
        help="hand a preference back to the configuration file (repeat)",
    )
    add_note(p)


def _limit(text: str) -> int | None:
    if text.strip().lower() == "none":
        return None
    if not text.strip().isdigit():
        from sentry.errors import CliError

        raise CliError(f"a limit is a number or 'none', not {text!r}")
    return int(text)


def _prefs_set(t: AdminTarget, args: argparse.Namespace) -> tuple[Any, Render]:
    body: dict[str, Any] = {}
    if args.auto_block is not None:
        body["auto_block_unregistered"] = args.auto_block == "on"
    for name in ("max_devices_per_mailbox", "max_mailboxes_per_device"):
        if getattr(args, name) is not None:
            body[name] = _limit(getattr(args, name))
    if args.refusal_style is not None:
        body["refusal_style"] = args.refusal_style
    if args.new_device_access is not None:
        body["new_device_access_when_registry_unreachable"] = args.new_device_access
    if args.compliance_overrides_allow is not None:
        body["compliance_overrides_allow"] = args.compliance_overrides_allow == "on"
    if args.use_file:
        body["use_file"] = args.use_file
    return t.call("PUT", "/api/preferences", with_note(args, body)), record


def _pools(t: AdminTarget, args: argparse.Namespace) -> tuple[Any, Render]:
    return t.call("GET", "/api/pools"), _pools_text


def _pools_text(answer: Any) -> str:
    rows = [
        {"pool": p["name"], "type": p["type"], **s} for p in answer["items"] for s in p["servers"]
    ]
    waiting = [p["name"] for p in answer["items"] if not p.get("ready", True)]
    lines = [table(rows, COLUMNS["servers"]), "routing: " + cell(answer["routing"])]
    if waiting:
        lines.append("not ready (no server up yet): " + ", ".join(waiting))
    return "\n".join(lines)


def _audit(t: AdminTarget, args: argparse.Namespace) -> tuple[Any, Render]:
    query = {"offset": args.offset, "limit": args.limit, "actor": args.by, "target": args.target}
    query |= {"since": args.since, "until": args.until}
    return t.call("GET", "/api/audit", query=query), page_render("audit")
