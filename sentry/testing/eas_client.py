"""A small raw EAS client on aiohttp, for tests and bench/ scripts.

Approach. It does only what a test needs to drive an EAS server (the demo
backend directly, or the gateway in front of it) by hand: the plain query
form, the MS-AS headers, Basic auth, bodies given as an ``Element``, as the
XML text form of ``sentry.eas.xmlform`` or as raw bytes, and a decoded
response. ``provision`` runs the two-phase Provision and keeps the final
policy key for later requests. Nothing here hides protocol errors: every
answer comes back as an ``EasResponse`` to assert on.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import aiohttp

from sentry.eas.wbxml import Element, decode, encode
from sentry.eas.xmlform import from_xml, to_xml

__all__ = ["DEFAULT_DEVICE_INFO", "EasResponse", "EasTestClient", "ProvisionFailed", "basic_auth"]

WBXML_TYPE = "application/vnd.ms-sync.wbxml"
DEFAULT_DEVICE_INFO: Mapping[str, str] = {
    "Model": "TestPhone 1",
    "IMEI": "356938035643809",
    "FriendlyName": "Test phone",
    "OS": "TestOS 1.0",
    "OSLanguage": "English",
    "UserAgent": "SentryTest/1.0",
}


def basic_auth(user: str, password: str) -> str:
    """An ``Authorization: Basic`` header value (UTF-8)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


@dataclass(frozen=True)
class EasResponse:
    """One HTTP answer: status, headers and body (decoded on demand)."""

    status: int
    headers: Mapping[str, str]
    raw: bytes

    @property
    def element(self) -> Element:
        """The decoded WBXML body (WbxmlError when there is none or it is bad)."""
        return decode(self.raw)

    @property
    def xml(self) -> str:
        """The body in XML text form ("" for an empty body)."""
        return to_xml(self.element) if self.raw else ""

    def text(self, *path: str) -> str | None:
        """The text at a child path of the root, e.g. ``r.text("Status")``."""
        node = self.element.find_path(*path)
        return None if node is None else node.text


class ProvisionFailed(AssertionError):
    """Provision did not yield a policy key; ``response`` is the answer."""

    def __init__(self, step: str, response: EasResponse) -> None:
        super().__init__(f"{step} failed: {response.status} {response.raw!r}")
        self.step = step
        self.response = response


@dataclass
class EasTestClient:
    """One device of one user speaking EAS to ``url`` (the full endpoint URL)."""

    session: aiohttp.ClientSession
    url: str
    user: str
    password: str
    device_id: str = "TESTDEVICE0001"
    device_type: str = "TestPhone"
    version: str = "16.1"
    policy_key: int | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)

    def _headers(self, content: bool) -> dict[str, str]:
        headers = {
            "Authorization": basic_auth(self.user, self.password),
            "MS-ASProtocolVersion": self.version,
            "User-Agent": "SentryTest/1.0",
        }
        if content:
            headers["Content-Type"] = WBXML_TYPE
        if self.policy_key is not None:
            headers["X-MS-PolicyKey"] = str(self.policy_key)
        return headers | self.extra_headers

    async def post(
        self,
        command: str,
        body: Element | str | bytes | None = None,
        *,
        params: Mapping[str, str] | None = None,
        timeout: float | None = 30.0,
        chunked: bool = False,
    ) -> EasResponse:
        """POST one command; ``body`` as Element, XML text or raw bytes;
        ``chunked``: sent with Transfer-Encoding: chunked, no declared length
        (the gateway then streams it instead of reading it whole)."""
        if isinstance(body, str):
            body = from_xml(body)
        raw = encode(body) if isinstance(body, Element) else (body or b"")
        data: bytes | AsyncIterator[bytes] = _chunks(raw) if chunked else raw
        query = {
            "Cmd": command,
            "User": self.user,
            "DeviceId": self.device_id,
            "DeviceType": self.device_type,
            **(params or {}),
        }
        async with self.session.post(
            self.url,
            params=query,
            data=data,
            headers=self._headers(bool(raw)),
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            return EasResponse(resp.status, dict(resp.headers), await resp.read())

    async def options(self) -> EasResponse:
        async with self.session.options(self.url) as resp:
            return EasResponse(resp.status, dict(resp.headers), await resp.read())

    async def provision(self, device_info: Mapping[str, str] | None = DEFAULT_DEVICE_INFO) -> int:
        """Two-phase Provision; store and return the final policy key."""
        self.policy_key = None
        info = ""
        if device_info is not None:
            fields = "".join(f"<{k}>{v}</{k}>" for k, v in device_info.items())
            info = f'<DeviceInformation xmlns="Settings"><Set>{fields}</Set></DeviceInformation>'
        policy = "<PolicyType>MS-EAS-Provisioning-WBXML</PolicyType>"
        first = await self.post(
            "Provision",
            f'<Provision xmlns="Provision">{info}<Policies><Policy>{policy}'
            "</Policy></Policies></Provision>",
        )
        temporary = first.text("Policies", "Policy", "PolicyKey")
        if first.status != 200 or temporary is None:
            raise ProvisionFailed("initial Provision", first)
        self.policy_key = int(temporary)
        ack = await self.post(
            "Provision",
            f'<Provision xmlns="Provision"><Policies><Policy>{policy}'
            f"<PolicyKey>{temporary}</PolicyKey><Status>1</Status></Policy></Policies></Provision>",
        )
        final = ack.text("Policies", "Policy", "PolicyKey")
        if ack.status != 200 or final is None:
            raise ProvisionFailed("Provision acknowledgement", ack)
        self.policy_key = int(final)
        return self.policy_key


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    yield body
