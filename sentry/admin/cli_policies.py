"""``sentry admin policies …``: the ActiveSync policies the gateway enforces.

One leaf command per API route (see ``cli_base``): ``list``, ``show``,
``set NAME --setting NAME=VALUE …`` (create or replace), ``delete``,
``assign POLICY (--user U | --label L | --association DEVICEID/USER |
--default)``, ``revert`` (the same scopes, no policy) and ``device DEVICEID
USER`` (which policy the device gets, and why).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from .cli_base import Builder, Render, add_note, quote_path, with_note
from .cli_client import AdminTarget
from .cli_format import Column, table

__all__ = ["add_policy_commands", "parse_setting"]

_COLUMNS: tuple[Column, ...] = (
    ("NAME", lambda r: r["name"]),
    ("SETTINGS", lambda r: len(r["settings"])),
    ("DIGEST", lambda r: r["digest"]),
    ("DESCRIPTION", lambda r: r["description"]),
)


def add_policy_commands(b: Builder) -> None:
    """Register ``policies list|show|set|delete|assign|revert|device``."""
    subs = b.group("policies", "ActiveSync policies the gateway enforces (Provision)")
    b.leaf(subs, "list", "the policies and their assignments", _list)
    p = b.leaf(subs, "show", "one policy", _show)
    p.add_argument("name", help="the policy")
    p = b.leaf(subs, "set", "create or replace a policy", _set)
    p.add_argument("name", help="the policy")
    p.add_argument(
        "--setting",
        action="append",
        type=parse_setting,
        default=[],
        metavar="NAME=VALUE",
        help="an EASProvisionDoc setting (MinDevicePasswordLength=6, AllowCamera=false); "
        "repeatable",
    )
    p.add_argument("--description", default=None, help="free text")
    p.add_argument(
        "--allow-non-provisionable",
        action="store_true",
        help="accept devices that acknowledge the policy as partially or not applied",
    )
    add_note(p)
    p = b.leaf(subs, "delete", "delete a policy (not while it is assigned)", _delete)
    p.add_argument("name", help="the policy")
    add_note(p)
    p = b.leaf(subs, "assign", "assign a policy (Assign Policy)", _assign)
    p.add_argument("policy", help="the policy to assign")
    _scope(p)
    p = b.leaf(subs, "revert", "remove an assignment (Revert Policy)", _revert)
    _scope(p)
    p = b.leaf(subs, "device", "which policy an association's device gets, and why", _device)
    p.add_argument("device_id", help="the EAS DeviceId")
    p.add_argument("user", help="the mailbox (any spelling of the principal)")


def _scope(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--user", help="a user (any spelling of the principal)")
    where.add_argument("--label", help="a label")
    where.add_argument("--association", metavar="DEVICEID/USER", help="one association")
    where.add_argument("--default", action="store_true", help="the default policy")
    add_note(p)


def parse_setting(text: str) -> tuple[str, Any]:
    """``NAME=VALUE``: ``true``/``false`` become booleans, digits integers."""
    name, sep, raw = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"--setting {text!r} is not NAME=VALUE")
    value: Any = raw.strip()
    if value.lower() in ("true", "false"):
        value = value.lower() == "true"
    else:
        try:
            value = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--setting {text!r}: not a number") from None
    return name.strip(), value


def _render_policy(a: dict[str, Any]) -> str:
    lines = [f"{a['name']} (digest {a['digest']})"]
    if a["description"]:
        lines.append(a["description"])
    lines += [f"  {k} = {json.dumps(v)}" for k, v in a["settings"].items()]
    lines.append(f"  allow_non_provisionable = {json.dumps(a['allow_non_provisionable'])}")
    return "\n".join(lines)


def _render_assignments(a: dict[str, Any]) -> str:
    lines = [f"default: {a['default'] or '(the backend)'}"]
    for scope in ("associations", "users", "labels"):
        lines += [f"{scope[:-1]} {k}: {v}" for k, v in a[scope].items()]
    return "\n".join(lines)


def _list(t: AdminTarget, args: argparse.Namespace) -> tuple[Any, Render]:
    answer = t.call("GET", "/api/eas-policies")
    return (
        answer,
        lambda a: table(a["items"], _COLUMNS) + "\n" + _render_assignments(a["assignments"]),
    )


def _show(t: AdminTarget, args: argparse.Namespace) -> tuple[Any, Render]:
    answer = t.call("GET", "/api/eas-policies/" + quote_path(args.name))
    return answer, _render_policy


def _set(t: AdminTarget, args: argparse.Namespace) -> tuple[Any, Render]:
    settings = dict(args.setting)
    body: dict[str, Any] = {"settings": settings}
    if args.description is not None:
        body["description"] = args.description
    if args.allow_non_provisionable:
        body["allow_non_provisionable"] = True
    answer = t.call("PUT", "/api/eas-policies/" + quote_path(args.name), with_note(args, body))
    return answer, _render_policy


def _delete(t: AdminTarget, args: argparse.Namespace) -> tuple[Any, Render]:
    path = "/api/eas-policies/" + quote_path(args.name)
    answer = t.call("DELETE", path, with_note(args, {}))
    return answer, lambda a: f"deleted {a['deleted']}"


def _where(args: argparse.Namespace) -> dict[str, Any]:
    """The scope argparse required (exactly one of the group)."""
    for scope in ("user", "label", "association"):
        value = getattr(args, scope)
        if value is not None:
            return {"scope": scope, "target": value}
    return {"scope": "default"}


def _assign(t: AdminTarget, args: argparse.Namespace) -> tuple[Any, Render]:
    body = with_note(args, {**_where(args), "policy": args.policy})
    answer = t.call("PUT", "/api/eas-policy-assignments", body)
    return answer, _render_assignments


def _revert(t: AdminTarget, args: argparse.Namespace) -> tuple[Any, Render]:
    body = with_note(args, {**_where(args), "policy": None})
    answer = t.call("PUT", "/api/eas-policy-assignments", body)
    return answer, _render_assignments


def _device(t: AdminTarget, args: argparse.Namespace) -> tuple[Any, Render]:
    path = f"/api/eas-policies/devices/{quote_path(args.device_id)}/{quote_path(args.user)}"
    answer = t.call("GET", path)

    def render(a: dict[str, Any]) -> str:
        head = f"{a['device_id']}/{a['user']}: "
        if a["policy"] is None:
            head += "the backend's own policy"
        else:
            head += f"{a['policy']} (from {a['source']})"
        p = a["provisioned"]
        if p is not None:
            state = "acknowledged" if p["acknowledged"] else "sent, not acknowledged"
            head += f"\nprovisioned with {p['policy']} at {p['at']}: {state}"
        return head

    return answer, render
