"""The gateway's own ActiveSync provisioning, and policy-key translation.

Approach. When a named policy applies to a device (``policy.easpolicy``), the
gateway is the device's provisioning server and the backend's client:

1. **Provision, initial request.** The gateway first provisions *upstream* on
   the device's behalf: it sends the device's own initial request (with its
   DeviceInformation, as 14.1+ backends require) to the backend, acknowledges
   the policy the backend returns with the temporary key it got, and keeps the
   backend's final key (none when the backend has no policy for the device:
   Policy Status 2). Then it answers the device with *its* policy and a
   temporary key of its own. Both keys are written to the store
   (``ProvisionRecord``) before the answer, so a restart loses neither.
2. **Provision, acknowledgement.** The temporary key must match (else Policy
   Status 5); the device's status 1 (applied) gets the final key; 2 or 3
   (partially, not applied) get 139 unless the policy allows non-provisionable
   devices; 4 (managed by a third party) gets 145.
3. **Every other request** goes through ``easpolicy.gate``: the device must
   present the final key the gateway issued, for the policy's current
   content, else it gets "provision first" (142/144 from 14.0 on, HTTP 449
   before), the way Exchange asks. A request that passes is forwarded with
   the key replaced by the backend's (``X-MS-PolicyKey``, or the key field
   of a base64 query; removed when the backend wants none), so the backend
   sees only its own key and the device only the gateway's.
4. **The backend asks again.** Its HTTP 449 on a forwarded request whose body
   the gateway holds (every request but a large streamed Sync): the gateway
   provisions upstream again at once (an initial request built from the
   association's recorded DeviceInformation), stores the new backend key and
   sends the request once more with it (``reprovision``); the device never
   notices. When that fails, or the body was streamed, or the backend asked
   with a WBXML 142/143/144 (which would need reading every answer), the
   answer reaches the device, which provisions again through the gateway,
   which provisions upstream again (step 1).
5. **Revert** (the assignment removed): ``gate`` answers 144 to a request
   carrying a gateway key; the device provisions again, and that Provision
   is forwarded to the backend (the record is deleted when it is), whose
   keys the device then uses unchanged.

Keys are random non-zero uint32 (MS-ASPROV 2.2.2.42 says a key SHOULD be
one); a new temporary key never equals the backend's key, so a reverted
device's gateway key is never mistaken for the backend's.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl, urlencode

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from sentry.aio import read_upto
from sentry.eas import policydoc, responses
from sentry.eas._b64query import with_command, with_policy_key
from sentry.eas.commands import ProvisionKind, ProvisionRequest, parse_provision
from sentry.eas.errors import EasError
from sentry.eas.request import Command, EasRequest, QueryForm
from sentry.eas.status import CommonStatus, PolicyStatus, ProvisionStatus
from sentry.eas.wbxml import Element, Limits, decode, encode
from sentry.model import AssociationKey, HistoryEvent, ProvisionRecord
from sentry.policy.changes import AppendHistory, Change, DeleteProvision, PutProvision
from sentry.policy.easpolicy import Pass, ProvisionRequired, Resolved, current, device_policy, gate

from .errors import UpstreamError
from .framing import frame_upstream
from .h1message import DeviceRequest
from .headers import upstream_headers
from .inspect import INSPECT_LIMIT

__all__ = [
    "BackendRefused",
    "KeyTranslation",
    "ProvisionUpstreamError",
    "before_forward",
    "initial_request",
    "provision_upstream",
    "reprovision",
    "translate",
]

_LIMITS = Limits(max_size=INSPECT_LIMIT)
_POLICY_KEY = "X-MS-PolicyKey"
_APPLIED, _PARTIAL, _NOT_APPLIED, _THIRD_PARTY = 1, 2, 3, 4


class ProvisionUpstreamError(UpstreamError):
    """The backend's Provision, run on the device's behalf, did not give a key.

    A backend that refuses the credentials (401) or the user (403) is answered
    to the device with that same status (a wrong password must prompt for it);
    anything else is 502."""

    kind = "provision"

    def __init__(self, message: str, http_status: int = 502) -> None:
        super().__init__(message)
        self.http_status = http_status
        if http_status in (401, 403):
            self.public_text = "unauthorized" if http_status == 401 else "forbidden"


class BackendRefused(Exception):
    """The backend answered the initial Provision with a top-level Status other
    than 1 (e.g. 165 DeviceInformationRequired): the device gets that status."""

    def __init__(self, status: int) -> None:
        super().__init__(f"the backend answered Provision with Status {status}")
        self.status = status


@dataclass(frozen=True, slots=True)
class KeyTranslation:
    """Replace the device's policy key by ``key`` (None: send none)."""

    key: int | None


def translate(
    translation: KeyTranslation, eas: EasRequest, path: str, query: str, headers: CIMultiDict[str]
) -> str:
    """Apply ``translation`` to the upstream ``headers``; return the path and query."""
    key = translation.key
    if _POLICY_KEY in headers:
        headers.popall(_POLICY_KEY)
        if key is not None:
            headers[_POLICY_KEY] = str(key)
    elif key is not None and eas.query_form is QueryForm.PLAIN:
        headers[_POLICY_KEY] = str(key)
    if eas.query_form is QueryForm.BASE64:
        query = with_policy_key(query, key)
    return f"{path}?{query}" if query else path


async def before_forward(
    ctx: Any,
    request: DeviceRequest,
    eas: EasRequest,
    body: bytes | None,
    pool: str,
    key: AssociationKey,
    mailbox: Any,
) -> web.Response | KeyTranslation | None:
    """What a forwarded request needs (module docstring): the gateway's own
    answer, a key translation, or None (forward unchanged)."""
    snapshot = ctx.state.snapshot
    if not snapshot.eas_policies and not snapshot.provisioning:
        return None  # the usual case: no policy anywhere
    if eas.command is Command.Provision:
        return await _provision(ctx, request, eas, body, pool, key, mailbox)
    verdict = gate(snapshot, key, eas.policy_key)
    if isinstance(verdict, ProvisionRequired):
        return _to_web(
            responses.provision_required(eas.command or Command.Sync, eas.protocol_version,
                                         verdict.status)
        )  # fmt: skip
    return _translation(verdict)


def _translation(verdict: Pass) -> KeyTranslation | None:
    return KeyTranslation(verdict.backend_key) if verdict.translate else None


async def _provision(
    ctx: Any,
    request: DeviceRequest,
    eas: EasRequest,
    body: bytes | None,
    pool: str,
    key: AssociationKey,
    mailbox: Any,
) -> web.Response | None:
    snapshot = ctx.state.snapshot
    resolved = device_policy(snapshot, key)
    record = snapshot.provisioning.get(key)
    if resolved is None:
        if record is not None:  # reverted: the backend provisions the device again
            await _write(ctx, [DeleteProvision(key), _history(ctx, key, "reverted", None)])
        return None
    parsed = _parse(body)
    if parsed is None or parsed.kind in (ProvisionKind.EMPTY, ProvisionKind.WIPE_ACK):
        return _to_web(policydoc.provision_status(ProvisionStatus.ProtocolError))
    if parsed.kind is ProvisionKind.ACKNOWLEDGE:
        return await _acknowledge(ctx, key, parsed, resolved, record)
    return await _initial(ctx, request, eas, body or b"", pool, key, mailbox, parsed, resolved)


def _parse(body: bytes | None) -> ProvisionRequest | None:
    if not body:
        return None
    try:
        return parse_provision(decode(body, _LIMITS))
    except EasError:
        return None


async def _initial(
    ctx: Any,
    request: DeviceRequest,
    eas: EasRequest,
    body: bytes,
    pool: str,
    key: AssociationKey,
    mailbox: Any,
    parsed: ProvisionRequest,
    resolved: Resolved,
) -> web.Response:
    if parsed.policy_type is None:
        return _to_web(policydoc.provision_status(ProvisionStatus.ProtocolError))
    if parsed.policy_type != policydoc.POLICY_TYPE:
        status = PolicyStatus.UnknownPolicyType
        return _to_web(policydoc.policy_status(parsed.policy_type, status))
    try:
        backend_key = await provision_upstream(ctx, request, eas, body, pool, mailbox)
    except BackendRefused as refused:
        return _to_web(policydoc.provision_status(refused.status))
    await ctx.state.backend_answered(key, 200)  # the backend accepted this mailbox
    old = ctx.state.snapshot.provisioning.get(key)
    temporary = _new_key(backend_key)
    keep = old is not None and current(old, resolved)
    record = ProvisionRecord(
        key,
        resolved.policy.name,
        resolved.digest,
        ctx.state.clock(),
        pending=temporary,
        issued=old.issued if keep and old is not None else None,
        backend_key=backend_key,
    )
    detail = {"policy": resolved.policy.name, "source": resolved.source}
    await _write(ctx, [PutProvision(record), _history(ctx, key, "policy_sent", detail)])
    info = parsed.device_information is not None
    return _to_web(
        policydoc.policy_response(
            temporary, resolved.policy.settings, eas.protocol_version, device_information=info
        )
    )


async def _acknowledge(
    ctx: Any,
    key: AssociationKey,
    parsed: ProvisionRequest,
    resolved: Resolved,
    record: ProvisionRecord | None,
) -> web.Response:
    if record is None or record.pending is None or parsed.policy_key != record.pending:
        return _to_web(policydoc.policy_status(policydoc.POLICY_TYPE, PolicyStatus.WrongPolicyKey))
    status = parsed.policy_status or _APPLIED
    if status == _THIRD_PARTY:
        return _to_web(policydoc.provision_status(CommonStatus.ExternallyManagedDevicesNotAllowed))
    if status != _APPLIED and not resolved.policy.allow_non_provisionable:
        return _to_web(policydoc.provision_status(CommonStatus.DeviceNotFullyProvisionable))
    final = _new_key(record.backend_key)
    done = replace(record, pending=None, issued=final, at=ctx.state.clock())
    detail = {"policy": record.policy, "status": status}
    await _write(ctx, [PutProvision(done), _history(ctx, key, "policy_acknowledged", detail)])
    return _to_web(policydoc.policy_acknowledged(final))


def _new_key(avoid: int | None) -> int:
    while True:
        key = secrets.randbelow(0xFFFFFFFF) + 1
        if key != avoid:
            return key


def _history(ctx: Any, key: AssociationKey, what: str, detail: Any) -> AppendHistory:
    return AppendHistory(key, HistoryEvent(ctx.state.clock(), f"eas_policy_{what}", detail or {}))


async def _write(ctx: Any, changes: list[Change]) -> None:
    await ctx.state.commit(lambda snapshot, now: changes)


# --- the backend's Provision, run on the device's behalf ---------------------------------


async def provision_upstream(
    ctx: Any, request: DeviceRequest, eas: EasRequest, initial: bytes, pool: str, mailbox: Any
) -> int | None:
    """The backend's final key for this device (None: the backend has no policy
    for it); ``ProvisionUpstreamError`` or another ``UpstreamError`` when the
    backend cannot be provisioned."""
    answer = await _upstream_call(ctx, request, eas, initial, pool, mailbox, None)
    top = answer.child_text("Status")
    if top is not None and top.isdigit() and top != "1" and len(top) <= 3:
        raise BackendRefused(int(top))
    policy = answer.find_path("Policies", "Policy")
    status = None if policy is None else policy.child_text("Status")
    if status == str(int(PolicyStatus.NoPolicy)):
        return None
    temporary = _policy_key(policy, status, "initial")
    ack = encode(
        Element("Provision", "Provision", (Element("Provision", "Policies", (Element(
            "Provision", "Policy", (
                Element("Provision", "PolicyType", (policydoc.POLICY_TYPE,)),
                Element("Provision", "PolicyKey", (str(temporary),)),
                Element("Provision", "Status", (str(_APPLIED),)),
            )),)),))
    )  # fmt: skip
    answer = await _upstream_call(ctx, request, eas, ack, pool, mailbox, temporary)
    policy = answer.find_path("Policies", "Policy")
    status = None if policy is None else policy.child_text("Status")
    return _policy_key(policy, status, "acknowledgement")


def _policy_key(policy: Element | None, status: str | None, step: str) -> int:
    text = None if policy is None else policy.child_text("PolicyKey")
    if status != str(int(PolicyStatus.Success)) or text is None or not text.isdigit():
        raise ProvisionUpstreamError(
            f"the backend's Provision {step} answer has Policy Status {status!r} and no key"
        )
    value = int(text)
    if not 0 < value <= 0xFFFFFFFF:
        raise ProvisionUpstreamError(f"the backend's Provision {step} key {text!r} is not a uint32")
    return value


async def _upstream_call(
    ctx: Any,
    request: DeviceRequest,
    eas: EasRequest,
    body: bytes,
    pool_name: str,
    mailbox: Any,
    key: int | None,
) -> Element:
    pool = ctx.upstreams.pools[pool_name]
    timeout = aiohttp.ClientTimeout(
        total=None,
        sock_connect=pool.settings.connect_timeout_seconds,
        sock_read=ctx.settings.request_timeout_seconds,
    )
    chain = ctx.addresses.chain(request.remote, request.headers.get("X-Forwarded-For"))
    headers = upstream_headers(request.headers, chain, ctx.proto)
    query = _provision_query(eas, request.query_string)
    path_qs = translate(KeyTranslation(key), eas, request.path, query, headers)
    data = frame_upstream(headers, body)
    _, upstream = await ctx.redirects.send(pool, mailbox, "POST", path_qs, headers, data, timeout)
    try:
        if upstream.status != 200:
            relay = upstream.status if upstream.status in (401, 403) else 502
            raise ProvisionUpstreamError(
                f"the backend answered Provision with {upstream.status}", relay
            )
        raw = await read_upto(upstream.content, INSPECT_LIMIT + 1)  # not just a first segment
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise ProvisionUpstreamError(f"the backend's Provision answer broke: {exc!r}") from exc
    finally:
        upstream.release()
    try:
        root = decode(raw, _LIMITS)
    except EasError as exc:
        raise ProvisionUpstreamError(f"the backend's Provision answer: {exc}") from exc
    if (root.namespace, root.tag) != ("Provision", "Provision"):
        raise ProvisionUpstreamError("the backend's Provision answer is not a Provision")
    return root


def _provision_query(eas: EasRequest, query: str) -> str:
    """The device's query, for a Provision (the same user, DeviceId and form)."""
    if eas.command is Command.Provision:
        return query
    if eas.query_form is QueryForm.BASE64:
        code = Command.Provision.code
        return with_command(query, 20 if code is None else code)
    pairs = [
        (k, "Provision" if k == "Cmd" else v) for k, v in parse_qsl(query, keep_blank_values=True)
    ]
    return urlencode(pairs)


def _to_web(resp: responses.Response) -> web.Response:
    return web.Response(
        status=resp.status, reason=resp.reason, headers=resp.headers, body=resp.body
    )


# --- the backend asked again (its 449): provision upstream once more ----------------------

_INFO_TAGS = {
    "model": "Model",
    "imei": "IMEI",
    "friendly_name": "FriendlyName",
    "os": "OS",
    "os_language": "OSLanguage",
    "phone_number": "PhoneNumber",
    "user_agent": "UserAgent",
    "enable_outbound_sms": "EnableOutboundSMS",
    "mobile_operator": "MobileOperator",
}


def initial_request(info: Any) -> bytes:
    """An initial Provision request, with ``settings:DeviceInformation`` from
    ``info`` (a ``DeviceInformation`` or None)."""
    head: tuple[Element, ...] = ()
    if info is not None:
        fields = tuple(
            Element("Settings", tag, (value,))
            for attr, tag in _INFO_TAGS.items()
            if (value := getattr(info, attr, None))
        )
        head = (Element("Settings", "DeviceInformation", (Element("Settings", "Set", fields),)),)
    policy = Element(
        "Provision", "Policy", (Element("Provision", "PolicyType", (policydoc.POLICY_TYPE,)),)
    )
    return encode(
        Element("Provision", "Provision", (*head, Element("Provision", "Policies", (policy,))))
    )


async def reprovision(
    ctx: Any,
    request: DeviceRequest,
    eas: EasRequest,
    pool: str,
    key: AssociationKey,
    mailbox: Any,
) -> KeyTranslation | None:
    """Provision upstream again for ``key`` and store the backend's new key; the
    translation to retry with, or None when it failed (the backend's answer is
    then the device's)."""
    record = ctx.state.snapshot.provisioning.get(key)
    row = ctx.state.snapshot.get(key)
    if record is None:
        return None
    body = initial_request(None if row is None else row.device_info)
    try:
        backend_key = await provision_upstream(ctx, request, eas, body, pool, mailbox)
    except (UpstreamError, BackendRefused):
        return None
    latest = ctx.state.snapshot.provisioning.get(key)
    if latest is None:
        return None
    updated = replace(latest, backend_key=backend_key)
    await _write(ctx, [PutProvision(updated), _history(ctx, key, "backend_reprovisioned", None)])
    return KeyTranslation(backend_key)
