"""``directory.ldap``: defaults, and every bad value named by its key path."""

from __future__ import annotations

from typing import Any

import pytest

from sentry.settings import SettingsError, settings_from_mapping

BASE = {"urls": ["ldaps://dc1.corp.example"], "bind_dn": "cn=sync", "base_dn": "dc=corp"}
BASE |= {"bind_password_file": "/etc/sentry/ldap-password"}


def ldap(**over: Any) -> Any:
    return settings_from_mapping({"directory": {"ldap": BASE | over}}).directory.ldap


def test_defaults() -> None:
    s = ldap()
    assert s.tls_verify is True and s.start_tls is False and s.page_size == 500
    assert s.removed_users == "mark" and s.sync_interval_seconds == 900
    assert s.attributes.principal == "userPrincipalName"
    assert s.attributes.aliases == ("proxyAddresses",)
    assert settings_from_mapping({}).directory.ldap is None


def test_the_attribute_mapping_names_what_is_requested() -> None:
    s = ldap(attributes={"custom1": "extensionAttribute1", "aliases": ["proxyAddresses", "mail"]})
    assert s.attributes.requested() == [
        "userPrincipalName", "mail", "displayName", "proxyAddresses", "extensionAttribute1",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("over", "path", "text"),
    [
        ({"urls": ["ldap://dc1.corp.example"]}, "urls[0]", "plaintext LDAP"),
        ({"urls": ["ldaps://dc1"], "start_tls": True}, "urls[0]", "TLS already"),
        ({"urls": ["ldaps://u:p@dc1"]}, "urls[0]", "bind DN and password"),
        ({"urls": ["https://dc1"]}, "urls[0]", "not an LDAP URL"),
        ({"urls": []}, "urls", "at least one"),
        ({"filter": "objectClass=person"}, "filter", "parentheses"),
        ({"page_size": 0}, "page_size", "1-10000"),
        ({"timeout_seconds": 0}, "timeout_seconds", "> 0"),
        ({"sync_interval_seconds": 5}, "sync_interval_seconds", "≥ 10"),
        ({"removed_users": "purge"}, "removed_users", "must be one of"),
        ({"max_removed_percent": 101}, "max_removed_percent", "0-100"),
        ({"attributes": {"custom2": "bad name!"}}, "attributes.custom2", "attribute name"),
        ({"bind_password": "x"}, "bind_password", "unknown key"),
    ],
)
def test_bad_values_name_their_key(over: dict[str, Any], path: str, text: str) -> None:
    with pytest.raises(SettingsError) as exc:
        ldap(**over)
    assert f"directory.ldap.{path}:" in str(exc.value) and text in str(exc.value)


def test_plaintext_is_allowed_to_loopback_and_unix_sockets() -> None:
    assert ldap(urls=["ldap://127.0.0.1:389", "ldap://localhost"]).urls[0].startswith("ldap:")
    assert ldap(urls=["ldapi://%2Frun%2Fslapd%2Fldapi"]).urls
    assert ldap(urls=["ldap://dc1.corp.example"], start_tls=True).start_tls
