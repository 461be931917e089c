"""Provisioning and Settings of the demo backend, the way Exchange does them.

Approach. ``provisioning_gate`` runs before every command but Provision: a
device whose X-MS-PolicyKey is not the final key of its (user, DeviceId) gets
142 DeviceNotProvisioned (no key) or 144 InvalidPolicyKey (a stale key) as the
command's own top-level Status at protocol 14.0 and later, and HTTP 449 before
14.0 or for a command whose response has no top-level Status (MS-ASPROV 3.1.5,
eas-protocol.md §3.1).

Provision is two-phase (MS-ASPROV 3.1.5.1): the initial request (no
Policy/PolicyKey) gets a temporary key and the policy document; the
acknowledgement quoting that temporary key gets the final key. A previous
final key stays valid until the new one is issued, so requests already in
flight are not refused. At 14.1 and later the initial request must carry
settings:DeviceInformation, else Provision Status 165 (what Exchange answers).
The policy document is Exchange's default mailbox policy (no PIN), filtered by
the client's protocol version using the code-page version notes.

Settings answers DeviceInformation Set (recorded per (user, DeviceId), like the
one inside Provision), Oof Get/Set, UserInformation Get and DevicePassword Set.
"""

from __future__ import annotations

import secrets

from sentry.eas.codepages import PAGE_BY_NAMESPACE
from sentry.eas.status import CommonStatus, PolicyStatus, ProvisionStatus, SettingsStatus
from sentry.eas.wbxml import Element

from .state import BackendState, PolicyRecord
from .wire import Call, Reply, command_status, el, leaf, status, version_at_least

__all__ = ["POLICY_TYPE", "provision", "provisioning_gate", "record_device_information", "settings"]

PROV = "Provision"
SET = "Settings"
POLICY_TYPE = "MS-EAS-Provisioning-WBXML"
WAP_POLICY_TYPE = "MS-WAP-Provisioning-XML"  # protocol 2.5
_WAP_DOC = (
    '<wap-provisioningdoc><characteristic type="SecurityPolicy">'
    '<parm name="4131" value="1"/></characteristic></wap-provisioningdoc>'
)
_EXEMPT = frozenset({"Provision"})

# Exchange's default mobile device mailbox policy (no device password required).
_POLICY_DOC: tuple[tuple[str, str], ...] = (
    ("DevicePasswordEnabled", "0"),
    ("AlphanumericDevicePasswordRequired", "0"),
    ("PasswordRecoveryEnabled", "0"),
    ("RequireStorageCardEncryption", "0"),
    ("AttachmentsEnabled", "1"),
    ("MinDevicePasswordLength", "4"),
    ("MaxInactivityTimeDeviceLock", "900"),
    ("MaxDevicePasswordFailedAttempts", "8"),
    ("AllowSimpleDevicePassword", "1"),
    ("DevicePasswordHistory", "0"),
    ("AllowStorageCard", "1"),
    ("AllowCamera", "1"),
    ("RequireDeviceEncryption", "0"),
    ("AllowUnsignedApplications", "1"),
    ("AllowUnsignedInstallationPackages", "1"),
    ("MinDevicePasswordComplexCharacters", "3"),
    ("AllowWiFi", "1"),
    ("AllowTextMessaging", "1"),
    ("AllowPOPIMAPEmail", "1"),
    ("AllowBluetooth", "2"),
    ("AllowIrDA", "1"),
    ("RequireManualSyncWhenRoaming", "0"),
    ("AllowDesktopSync", "1"),
    ("MaxCalendarAgeFilter", "0"),
    ("AllowHTMLEmail", "1"),
    ("MaxEmailAgeFilter", "0"),
    ("MaxEmailBodyTruncationSize", "-1"),
    ("MaxEmailHTMLBodyTruncationSize", "-1"),
    ("RequireSignedSMIMEMessages", "0"),
    ("RequireEncryptedSMIMEMessages", "0"),
    ("RequireSignedSMIMEAlgorithm", "0"),
    ("RequireEncryptionSMIMEAlgorithm", "0"),
    ("AllowSMIMEEncryptionAlgorithmNegotiation", "2"),
    ("AllowSMIMESoftCerts", "1"),
    ("AllowBrowser", "1"),
    ("AllowConsumerEmail", "1"),
    ("AllowRemoteDesktop", "1"),
    ("AllowInternetSharing", "1"),
)


def provisioning_gate(state: BackendState, call: Call) -> Reply | None:
    """None when ``call`` may proceed; else the not-provisioned answer."""
    if not state.config.require_provisioning or call.command in _EXEMPT:
        return None
    record = state.policies.get(call.owner)
    if record is not None and record.final is not None and call.policy_key == record.final:
        return None
    code = CommonStatus.InvalidPolicyKey if call.policy_key else CommonStatus.DeviceNotProvisioned
    reply = command_status(call.command, code) if call.at_least("14.0") else None
    return reply or Reply(http_status=449)


def _new_key() -> int:
    return secrets.randbelow(0xFFFFFFFE) + 1


def _provision_status(value: ProvisionStatus | CommonStatus) -> Reply:
    return Reply(el(PROV, "Provision", status(PROV, value)))


def _policy_answer(policy_type: str, *content: Element | None) -> Reply:
    policy = el(PROV, "Policy", leaf(PROV, "PolicyType", policy_type), *content)
    return Reply(
        el(PROV, "Provision", status(PROV, ProvisionStatus.Success), el(PROV, "Policies", policy))
    )


async def provision(state: BackendState, call: Call) -> Reply:
    """The Provision command: initial request, acknowledgement, or wipe acknowledgement."""
    body = call.body
    if body is None or body.tag != "Provision":
        return _provision_status(ProvisionStatus.ProtocolError)
    if body.find("RemoteWipe") is not None or body.find("AccountOnlyRemoteWipe") is not None:
        return _provision_status(ProvisionStatus.Success)  # this backend never asks for a wipe
    policy = body.find_path("Policies", "Policy")
    policy_type = None if policy is None else policy.child_text("PolicyType")
    if policy is None or policy_type is None:
        return _provision_status(ProvisionStatus.ProtocolError)
    if policy_type not in (POLICY_TYPE, WAP_POLICY_TYPE):
        return _policy_answer(policy_type, status(PROV, PolicyStatus.UnknownPolicyType))
    acked = policy.child_text("PolicyKey")
    if acked is None:
        return _initial(state, call, body, policy_type)
    return _acknowledge(state, call, policy_type, acked)


def _initial(state: BackendState, call: Call, body: Element, policy_type: str) -> Reply:
    info = body.find("DeviceInformation", SET)
    if info is None and call.at_least("14.1"):
        return _provision_status(CommonStatus.DeviceInformationRequired)
    if info is not None:
        record_device_information(state, call, info)
    record = state.policies.setdefault(call.owner, PolicyRecord())
    record.pending = _new_key()
    policy = el(
        PROV,
        "Policy",
        leaf(PROV, "PolicyType", policy_type),
        status(PROV, PolicyStatus.Success),
        leaf(PROV, "PolicyKey", record.pending),
        el(PROV, "Data", _policy_data(state, call, policy_type)),
    )
    info_answer = None
    if info is not None:
        info_answer = el(SET, "DeviceInformation", status(SET, SettingsStatus.Success))
    root = el(
        PROV,
        "Provision",
        info_answer,
        status(PROV, ProvisionStatus.Success),
        el(PROV, "Policies", policy),
    )
    return Reply(root)


def _policy_data(state: BackendState, call: Call, policy_type: str) -> Element | str:
    if policy_type == WAP_POLICY_TYPE:
        return _WAP_DOC
    tokens = PAGE_BY_NAMESPACE[PROV].by_name
    doc = {**dict(_POLICY_DOC), **dict(state.config.policy)}
    settings = [
        leaf(PROV, name, value)
        for name, value in doc.items()
        if version_at_least(call.version, tokens[name].since or "2.5")
    ]
    return el(PROV, "EASProvisionDoc", *settings)


def _acknowledge(state: BackendState, call: Call, policy_type: str, acked: str) -> Reply:
    record = state.policies.get(call.owner)
    if record is None or record.pending is None or acked != str(record.pending):
        return _policy_answer(policy_type, status(PROV, PolicyStatus.WrongPolicyKey))
    record.final, record.pending = _new_key(), None
    return _policy_answer(
        policy_type, status(PROV, PolicyStatus.Success), leaf(PROV, "PolicyKey", record.final)
    )


def record_device_information(state: BackendState, call: Call, info: Element) -> None:
    """Remember the DeviceInformation/Set fields of this (user, DeviceId)."""
    fields = info.find("Set", SET) or info
    state.stats.device_info[call.owner] = {child.tag: child.text or "" for child in fields.children}


async def settings(state: BackendState, call: Call) -> Reply:
    """The Settings command: one answer element per requested setting."""
    body = call.body
    if body is None or body.tag != "Settings":
        return Reply(el(SET, "Settings", status(SET, SettingsStatus.ProtocolError)))
    answers = [_one_setting(state, call, child) for child in body.children]
    return Reply(el(SET, "Settings", status(SET, SettingsStatus.Success), *answers))


def _one_setting(state: BackendState, call: Call, request: Element) -> Element:
    ok = status(SET, SettingsStatus.Success)
    if request.tag == "DeviceInformation":
        record_device_information(state, call, request)
        return el(SET, "DeviceInformation", ok)
    if request.tag == "Oof":
        return _oof(state, call, request)
    if request.tag == "UserInformation":
        return el(SET, "UserInformation", ok, el(SET, "Get", _user_information(call)))
    if request.tag == "DevicePassword":
        return el(SET, "DevicePassword", ok)
    return el(SET, request.tag, status(SET, SettingsStatus.ProtocolError))


def _oof(state: BackendState, call: Call, request: Element) -> Element:
    ok = status(SET, SettingsStatus.Success)
    user = call.mailbox.user
    new_state = request.find_path("Set", "OofState")
    if new_state is not None:
        state.oof_enabled[user] = (new_state.text or "0") != "0"
        return el(SET, "Oof", ok)
    enabled = state.oof_enabled.get(user, False)
    return el(SET, "Oof", ok, el(SET, "Get", leaf(SET, "OofState", int(enabled))))


def _user_information(call: Call) -> Element:
    box = call.mailbox
    if not call.at_least("14.1"):
        return el(SET, "EmailAddresses", leaf(SET, "SMTPAddress", box.email))
    account = el(
        SET,
        "Account",
        leaf(SET, "UserDisplayName", box.display_name),
        el(SET, "EmailAddresses", leaf(SET, "PrimarySmtpAddress", box.email)),
    )
    return el(SET, "Accounts", account)
