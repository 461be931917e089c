"""Header hygiene and the X-Forwarded-For rules."""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

from sentry.proxy.headers import ClientAddress, downstream_headers, upstream_headers


def proxy(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def test_hop_by_hop_and_connection_named_headers_are_dropped() -> None:
    h = proxy(
        ("Connection", "keep-alive, X-Secret-Hop"),
        ("Keep-Alive", "timeout=5"),
        ("X-Secret-Hop", "1"),
        ("Transfer-Encoding", "chunked"),
        ("Host", "gateway.example"),
        ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
        ("Authorization", "Basic YWxpY2U6c2VjcmV0"),
        ("MS-ASProtocolVersion", "16.1"),
        ("X-MS-PolicyKey", "1234"),
        ("User-Agent", "Apple-iPhone/1"),
    )
    out = upstream_headers(h, ["198.51.100.7"], "https")
    assert set(map(str.lower, out)) == {
        "authorization", "ms-asprotocolversion", "x-ms-policykey", "user-agent",
        "x-forwarded-for", "x-forwarded-proto",
    }  # fmt: skip
    assert out["Authorization"] == "Basic YWxpY2U6c2VjcmV0"
    assert out["X-Forwarded-Proto"] == "https"
    back = downstream_headers(proxy(("Connection", "close"), ("X-MS-Location", "https://x/")))
    assert list(back) == ["X-MS-Location"]


def test_forged_forwarded_for_from_an_untrusted_peer_is_discarded() -> None:
    addresses = ClientAddress(["10.0.0.0/8"])
    assert addresses.chain("203.0.113.9", "1.2.3.4") == ["203.0.113.9"]
    assert addresses.client("203.0.113.9", "1.2.3.4") == "203.0.113.9"


def test_trusted_load_balancer_passes_the_device_address() -> None:
    addresses = ClientAddress(["10.0.0.0/8"])
    assert addresses.chain("10.1.2.3", "198.51.100.7") == ["198.51.100.7", "10.1.2.3"]
    assert addresses.client("10.1.2.3", "198.51.100.7, 10.9.9.9") == "198.51.100.7"
    assert ClientAddress([]).client("10.1.2.3", "198.51.100.7") == "10.1.2.3"
