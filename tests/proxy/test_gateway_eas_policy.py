"""The gateway's own ActiveSync policy on the wire (sentry.proxy.provisioning):
two-phase Provision answered by the gateway, keys translated for a backend
that provisions on its own, "provision first" answers, revert, one policy for
every mailbox of a device, and keys that survive a restart."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from sentry.eas.policydoc import decode_provision_doc
from sentry.eas.wbxml import Element
from sentry.model import AssociationKey
from sentry.policy.easpolicy import Pass, assign, gate, policy_from, put_policy
from sentry.testing.backend import start_backend
from sentry.testing.eas_client import EasResponse, EasTestClient
from sentry.testing.faulty import CuttableProxy
from sentry.testing.gateway import DemoGateway, PoolSpec, demo_gateway
from sentry.testing.state import BackendConfig

FOLDERSYNC = '<FolderSync xmlns="FolderHierarchy"><SyncKey>0</SyncKey></FolderSync>'
EAS = "/Microsoft-Server-ActiveSync"
STRICT = {"DevicePasswordEnabled": True, "MinDevicePasswordLength": 6, "AllowCamera": False}


def client(gw: DemoGateway, session: aiohttp.ClientSession, user: str, device: str, **kw: str):  # type: ignore[no-untyped-def]
    return EasTestClient(session, f"{gw.url}{EAS}", user, "secret", device_id=device, **kw)


async def _policy(gw: DemoGateway, name: str, settings: dict[str, object], **where: str) -> None:
    state = gw.gateway.state
    policy = policy_from(name, {"settings": settings})
    await state.commit(lambda snap, now: put_policy(snap, policy, actor="t", now=now))
    for scope, target in where.items():
        await state.commit(
            lambda snap, now, s=scope, t=target: assign(snap, s, t, name, actor="t", now=now)  # type: ignore[misc]
        )


async def _revert(gw: DemoGateway, scope: str, target: str) -> None:
    state = gw.gateway.state
    await state.commit(lambda snap, now: assign(snap, scope, target, None, actor="t", now=now))  # type: ignore[arg-type]


def _backend_final(gw: DemoGateway, user: str, device: str) -> int | None:
    records = gw.backend("exchange").state.policies
    found = [r.final for (u, d), r in records.items() if u == user and d.upper() == device]
    return found[0] if found else None


def _doc(response: EasResponse) -> dict[str, int]:
    data = response.element.find_path("Policies", "Policy", "Data")
    assert data is not None
    doc = data.find("EASProvisionDoc")
    assert isinstance(doc, Element)
    return dict(decode_provision_doc(doc))


async def test_gateway_answers_provision_and_translates_keys(
    gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    await _policy(gateway, "strict", STRICT, default="")
    phone = client(gateway, session, "alice", "EASPOL0001")
    # Before provisioning: 142 from the gateway, the backend never asked.
    before = gateway.backend("exchange").stats.total
    refused = await phone.post("FolderSync", FOLDERSYNC)
    assert (refused.status, refused.text("Status")) == (200, "142")
    assert gateway.backend("exchange").stats.total == before
    key = await phone.provision()
    backend_key = _backend_final(gateway, "alice", "EASPOL0001")
    assert backend_key is not None and backend_key != key  # two keys, each side its own
    record = gateway.gateway.state.snapshot.provisioning[AssociationKey("EASPOL0001", "alice")]
    assert (record.issued, record.backend_key, record.pending) == (key, backend_key, None)
    # The backend accepts the request only with its own key: the gateway substituted it.
    synced = await phone.post("FolderSync", FOLDERSYNC)
    assert (synced.status, synced.text("Status")) == (200, "1")
    # A stale key is refused by the gateway with 144.
    phone.policy_key = key ^ 1
    stale = await phone.post("FolderSync", FOLDERSYNC)
    assert stale.text("Status") == "144"


async def test_the_policy_document_is_the_gateways(
    gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    await _policy(gateway, "strict", STRICT, user="bob")
    phone = client(gateway, session, "bob", "EASPOL0002")
    initial = (
        '<Provision xmlns="Provision">{info}<Policies><Policy>'
        "<PolicyType>MS-EAS-Provisioning-WBXML</PolicyType></Policy></Policies></Provision>"
    )
    # 16.1 without DeviceInformation: the backend's 165 reaches the device.
    missing = await phone.post("Provision", initial.format(info=""))
    assert missing.text("Status") == "165"
    info = '<DeviceInformation xmlns="Settings"><Set><Model>X</Model></Set></DeviceInformation>'
    first = await phone.post("Provision", initial.format(info=info))
    assert first.text("Status") == "1"
    assert first.text("DeviceInformation", "Status") == "1"
    assert _doc(first) == {
        "AllowCamera": 0,
        "DevicePasswordEnabled": 1,
        "MinDevicePasswordLength": 6,
    }
    # A wrong temporary key in the acknowledgement: Policy Status 5.
    wrong = await phone.post(
        "Provision",
        '<Provision xmlns="Provision"><Policies><Policy>'
        "<PolicyType>MS-EAS-Provisioning-WBXML</PolicyType><PolicyKey>1</PolicyKey>"
        "<Status>1</Status></Policy></Policies></Provision>",
    )
    assert wrong.text("Policies", "Policy", "Status") == "5"


async def test_revert_returns_the_device_to_the_backends_policy(
    gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    await _policy(gateway, "strict", STRICT, user="alice")
    phone = client(gateway, session, "alice", "EASPOL0003")
    gateway_key = await phone.provision()
    await _revert(gateway, "user", "alice")
    refused = await phone.post("FolderSync", FOLDERSYNC)
    assert refused.text("Status") == "144"  # provision again, with the backend this time
    key = await phone.provision()
    assert key == _backend_final(gateway, "alice", "EASPOL0003") and key != gateway_key
    assert AssociationKey("EASPOL0003", "alice") not in gateway.gateway.state.snapshot.provisioning
    synced = await phone.post("FolderSync", FOLDERSYNC)
    assert synced.text("Status") == "1"


async def test_every_mailbox_of_a_device_gets_the_same_policy(
    gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    await _policy(gateway, "lenient", {"DevicePasswordEnabled": False}, default="")
    await _policy(gateway, "strict", STRICT, association="EASPOL0004/alice")
    alice = client(gateway, session, "alice", "EASPOL0004")
    await alice.provision()
    shared = client(gateway, session, "shared", "EASPOL0004")
    await shared.provision()
    snap = gateway.gateway.state.snapshot
    policies = {
        snap.provisioning[AssociationKey("EASPOL0004", u)].policy for u in ("alice", "shared")
    }
    assert policies == {"strict"}  # the association assignment of one mailbox wins device-wide
    other = client(gateway, session, "bob", "EASPOL0005")
    await other.provision()
    assert snap.provisioning[AssociationKey("EASPOL0005", "bob")].policy == "lenient"


async def test_a_changed_policy_asks_the_device_to_provision_again(
    gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    await _policy(gateway, "strict", STRICT, default="")
    phone = client(gateway, session, "alice", "EASPOL0006")
    await phone.provision()
    await _policy(gateway, "strict", {**STRICT, "MinDevicePasswordLength": 8})
    assert (await phone.post("FolderSync", FOLDERSYNC)).text("Status") == "144"
    await phone.provision()
    assert (await phone.post("FolderSync", FOLDERSYNC)).text("Status") == "1"


async def test_before_14_the_gateway_asks_with_449(
    gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    await _policy(gateway, "strict", STRICT, default="")
    phone = client(gateway, session, "alice", "EASPOL0007", version="12.1")
    refused = await phone.post("FolderSync", FOLDERSYNC)
    assert refused.status == 449


async def test_keys_are_durable(gateway: DemoGateway, session: aiohttp.ClientSession) -> None:
    """What a restarted gateway loads lets the device through with its key."""
    await _policy(gateway, "strict", STRICT, default="")
    phone = client(gateway, session, "alice", "EASPOL0008")
    key = await phone.provision()
    loaded = await gateway.gateway.store.load()  # what a restart starts from
    verdict = gate(loaded, AssociationKey("EASPOL0008", "alice"), key)
    assert verdict == Pass(True, _backend_final(gateway, "alice", "EASPOL0008"))
    assert set(loaded.eas_policies) == {"strict"} and loaded.policy_assignments.default == "strict"


async def test_a_backend_449_is_reprovisioned_upstream_and_retried(
    gateway: DemoGateway, session: aiohttp.ClientSession
) -> None:
    await _policy(gateway, "strict", STRICT, default="")
    phone = client(gateway, session, "alice", "EASPOL0009", version="12.1")
    key = await phone.provision()
    old = _backend_final(gateway, "alice", "EASPOL0009")
    gateway.backend("exchange").state.policies.clear()  # the backend forgets: 449 at 12.1
    synced = await phone.post("FolderSync", FOLDERSYNC)
    assert (synced.status, synced.text("Status")) == (200, "1")  # the device never noticed
    new = _backend_final(gateway, "alice", "EASPOL0009")
    assert new is not None and new != old and phone.policy_key == key
    record = gateway.gateway.state.snapshot.provisioning[AssociationKey("EASPOL0009", "alice")]
    assert (record.issued, record.backend_key) == (key, new)


async def test_the_gateways_own_provision_reads_an_answer_that_arrives_in_pieces(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    """The backend's Provision answer reaches the gateway 64 bytes at a time
    (a policy bigger than one TCP segment on a real network): the gateway
    reads all of it, where one read used to take the first piece and refuse
    the rest as a broken answer."""
    backend = await start_backend(BackendConfig())
    proxy = CuttableProxy("127.0.0.1", backend.port, dribble=(64, 0.002))
    try:
        pools = {
            "exchange": PoolSpec(
                "exchange", extra={"servers": [f"http://{proxy.host}:{proxy.port}"]}
            )
        }
        async with demo_gateway(tmp_path, pools, gateway={"tls": {"enabled": False}}) as gw:
            await _policy(gw, "strict", STRICT, default="")
            phone = client(gw, session, "alice", "EASPOL0099")
            await phone.provision()
            synced = await phone.post("FolderSync", FOLDERSYNC)
            assert (synced.status, synced.text("Status")) == (200, "1")
    finally:
        proxy.close()
        await backend.stop()
