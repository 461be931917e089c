"""Settings DeviceInformation (MS-ASCMD 2.2.3.45; eas-protocol.md §3.4).

The only place a client states its model, IMEI, OS and friendly name. It comes
in ``<Settings><DeviceInformation><Set>…`` (12.1, 14.0) or inside the initial
Provision (14.1+); both are read by ``device_information_from`` into one
frozen ``sentry.model.DeviceInformation``. Every field is optional and at most
1024 chars.
"""

from __future__ import annotations

from collections.abc import Mapping

from sentry.eas.wbxml import Element
from sentry.model import DeviceInformation  # the domain's value (L0): one definition

from ._fields import bounded_text, expect_root

__all__ = ["DeviceInformation", "device_information_from", "parse_settings_device_information"]

NAMESPACE = "Settings"


# Settings tag -> DeviceInformation field.
_FIELD_BY_TAG: Mapping[str, str] = {
    "Model": "model",
    "IMEI": "imei",
    "FriendlyName": "friendly_name",
    "OS": "os",
    "OSLanguage": "os_language",
    "PhoneNumber": "phone_number",
    "UserAgent": "user_agent",
    "EnableOutboundSMS": "enable_outbound_sms",
    "MobileOperator": "mobile_operator",
}


def device_information_from(container: Element) -> DeviceInformation | None:
    """Read ``DeviceInformation/Set`` below ``container``; None when absent."""
    info = container.find("DeviceInformation", NAMESPACE)
    values = None if info is None else info.find("Set", NAMESPACE)
    if values is None:
        return None
    fields = {attr: bounded_text(values, tag, NAMESPACE) for tag, attr in _FIELD_BY_TAG.items()}
    return DeviceInformation(**fields)


def parse_settings_device_information(root: Element) -> DeviceInformation | None:
    """The DeviceInformation of a Settings request body, or None when it has none."""
    expect_root(root, NAMESPACE, "Settings")
    return device_information_from(root)
