"""Microseconds per ``parse_request`` for a plain and a base64 query.

Run: ``.venv/bin/python bench/bench_request.py`` (or ``-m bench.bench_request``).
Each figure is the best of 5 timeit repeats, divided by the loop count, so it
measures the parser, not the noise of the machine.
"""

from __future__ import annotations

import timeit

from sentry.eas.request import parse_request

NUMBER = 20_000
REPEAT = 5
HEADERS = {
    "Authorization": "Basic Q09SUFxqZG9lOnNlY3JldA==",
    "MS-ASProtocolVersion": "14.1",
    "X-MS-PolicyKey": "1234567890",
    "User-Agent": "Apple-iPhone15C2/2104.1",
    "Content-Type": "application/vnd.ms-sync.wbxml",
}
CASES = {
    "plain": "Cmd=Ping&User=CORP%5Cjdoe&DeviceId=ABC123DEF456&DeviceType=iPhone",
    "base64": "jRIJBAZBQkMxMjME0gKWSQZpUGhvbmUIEGpkb2VAZXhhbXBsZS5jb20HAQE=",
}


def microseconds(query: str) -> float:
    """Best-of-``REPEAT`` time of one ``parse_request`` call, in µs."""
    timer = timeit.Timer(lambda: parse_request("POST", query, HEADERS))
    return min(timer.repeat(repeat=REPEAT, number=NUMBER)) / NUMBER * 1e6


def main() -> None:
    results = {name: microseconds(query) for name, query in CASES.items()}
    print(f"parse_request, best of {REPEAT} x {NUMBER:,} calls")
    print(f"{'':<9}" + "".join(f"{name:>10}" for name in results))
    print(f"{'µs/call':<9}" + "".join(f"{us:>10.2f}" for us in results.values()))
    print(f"{'calls/s':<9}" + "".join(f"{1e6 / us:>10,.0f}" for us in results.values()))


if __name__ == "__main__":
    main()
