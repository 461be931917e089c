"""WBXML decode/encode speed, ours against pyactivesync's codec in the same run.

Run: ``.venv/bin/python bench/bench_wbxml.py`` (or ``-m bench.bench_wbxml``).
Small bodies are timed in µs per call, as the best of 5 ``timeit`` repeats
divided by the loop count (found by ``autorange``); the large Sync response is
timed in MB/s (10^6 bytes) over its best repeat. The baseline is
``pyactivesync._wbxml`` (``WBXMLReader(data).parse()`` and ``WBXMLWriter`` driven
by prebuilt ``wtag`` builders); both sides decode the same bytes and must
write the same bytes, which ``build_cases`` checks before timing. The ratio
column is ours / theirs: below 1 is faster for µs, above 1 for MB/s.

Results go to stdout as a markdown table and to ``bench/results/wbxml.json``.
"""

from __future__ import annotations

import json
import platform
import timeit
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pyactivesync import _codepages as pyas_tables
from pyactivesync._wbxml import WBXMLReader, WBXMLWriter, wtag

from sentry.eas.codepages import PAGES
from sentry.eas.wbxml import Element, decode, encode

REPEAT = 5
TARGET_PROVISION_DECODE_US = 30.0
RESULTS = Path(__file__).parent / "results" / "wbxml.json"


def el(namespace: str, tag: str, *content: Element | str | bytes) -> Element:
    return Element(namespace, tag, content)


def provision_request() -> Element:
    """A 14.1 initial Provision: DeviceInformation first, then the policy type."""
    s = "Settings"
    device = [
        el(s, "Model", "SM-S911B"),
        el(s, "IMEI", "356938035643809"),
        el(s, "FriendlyName", "Galaxy S23"),
        el(s, "OS", "Android 14"),
        el(s, "OSLanguage", "en-US"),
        el(s, "PhoneNumber", "+15555550100"),
        el(s, "UserAgent", "Android-Mail/2024.01.07"),
        el(s, "MobileOperator", "Example Mobile"),
    ]
    policy = el("Provision", "PolicyType", "MS-EAS-Provisioning-WBXML")
    return el(
        "Provision",
        "Provision",
        el(s, "DeviceInformation", el(s, "Set", *device)),
        el("Provision", "Policies", el("Provision", "Policy", policy)),
    )


def ping_request() -> Element:
    folders = [
        el("Ping", "Folder", el("Ping", "Id", folder_id), el("Ping", "Class", cls))
        for folder_id, cls in (("5", "Email"), ("6", "Calendar"), ("7", "Contacts"))
    ]
    return el(
        "Ping", "Ping", el("Ping", "HeartbeatInterval", "470"), el("Ping", "Folders", *folders)
    )


def foldersync_request() -> Element:
    return el("FolderHierarchy", "FolderSync", el("FolderHierarchy", "SyncKey", "0"))


def sync_response(items: int = 200, body_size: int = 5600) -> Element:
    """A Sync response adding ``items`` mails, each with a ~``body_size`` byte body."""
    paragraph = "Grüße aus dem Büro. The quarterly numbers are attached; see the summary. "
    adds = []
    for i in range(items):
        body = (f"Message {i}. " + paragraph * (body_size // len(paragraph) + 1))[:body_size]
        data = el(
            "AirSync",
            "ApplicationData",
            el("Email", "To", f'"Jane Doe" <jane{i}@example.com>'),
            el("Email", "From", '"John Roe" <john@example.com>'),
            el("Email", "Subject", f"Quarterly report #{i}"),
            el("Email", "DateReceived", "2024-05-01T09:30:00.000Z"),
            el("Email", "DisplayTo", "Jane Doe"),
            el("Email", "Importance", "1"),
            el("Email", "Read", "0"),
            el(
                "AirSyncBase",
                "Body",
                el("AirSyncBase", "Type", "1"),
                el("AirSyncBase", "EstimatedDataSize", str(len(body.encode()))),
                el("AirSyncBase", "Data", body),
            ),
            el("Email", "MessageClass", "IPM.Note"),
            el("Email", "InternetCPID", "65001"),
            el("Email", "ContentClass", "urn:content-classes:message"),
            el("AirSyncBase", "NativeBodyType", "1"),
        )
        adds.append(el("AirSync", "Add", el("AirSync", "ServerId", f"5:{i + 1}"), data))
    collection = el(
        "AirSync",
        "Collection",
        el("AirSync", "SyncKey", "2"),
        el("AirSync", "CollectionId", "5"),
        el("AirSync", "Status", "1"),
        el("AirSync", "Commands", *adds),
    )
    return el("AirSync", "Sync", el("AirSync", "Collections", collection))


# pyactivesync's side: its names for our tokens, and wtag builders for our trees.


def _their_names() -> dict[tuple[str, str], tuple[str, str]]:
    names = {}
    for page_name, tags in pyas_tables.CODEPAGES.items():
        page = PAGES[pyas_tables.PAGE_INDEX[page_name]]
        for tag, value in tags.items():
            if value in page.by_value:
                names[page.namespace, page.by_value[value].name] = (page_name, tag)
    return names


@contextmanager
def pyactivesync_knows_mobile_operator() -> Iterator[None]:
    """pyactivesync's Settings page lacks MobileOperator (0x22), which a 14.1
    DeviceInformation carries; lend it the token while its builders run."""
    settings = pyas_tables.CODEPAGES["Settings"]
    settings["MobileOperator"] = 0x22
    try:
        yield
    finally:
        del settings["MobileOperator"]


def to_builder(element: Element, names: dict[tuple[str, str], tuple[str, str]]) -> Any:
    page, tag = names.get((element.namespace, element.tag)) or (element.namespace, element.tag)
    texts = [c for c in element.content if isinstance(c, str)]
    children = [to_builder(c, names) for c in element.content if isinstance(c, Element)]
    return wtag(page, tag, children or None, texts[0] if texts else None)


def pyas_writer(tree: Element) -> Callable[[], bytes]:
    builder = to_builder(tree, _their_names())

    def write() -> bytes:
        writer = WBXMLWriter()
        builder(writer)
        return writer.render()

    return write


# Timing.


@dataclass(frozen=True)
class Case:
    name: str
    tree: Element
    data: bytes


@dataclass(frozen=True)
class Result:
    name: str
    unit: str
    sentry: float
    pyactivesync: float

    @property
    def ratio(self) -> float:
        return self.sentry / self.pyactivesync


def best_seconds(call: Callable[[], object]) -> float:
    """Best-of-``REPEAT`` seconds per call, with a loop count from ``autorange``."""
    timer = timeit.Timer(call)
    number, _ = timer.autorange()
    return min(timer.repeat(repeat=REPEAT, number=number)) / number


def build_cases() -> list[Case]:
    cases = [
        Case("Provision 14.1 initial request", provision_request(), b""),
        Case("Ping request (3 folders)", ping_request(), b""),
        Case("FolderSync request (vector 4)", foldersync_request(), b""),
        Case("Sync response (200 mails)", sync_response(), b""),
    ]
    cases = [Case(c.name, c.tree, encode(c.tree)) for c in cases]
    with pyactivesync_knows_mobile_operator():
        for case in cases:
            assert decode(case.data) == case.tree, case.name
            assert pyas_writer(case.tree)() == case.data, case.name
    assert cases[2].data == bytes.fromhex("03 01 6A 00 00 07 56 52 03 30 00 01 01")
    assert len(cases[3].data) >= 1_048_576
    return cases


def measure(case: Case, large: bool) -> list[Result]:
    with pyactivesync_knows_mobile_operator():
        write_theirs = pyas_writer(case.tree)
        timings = [
            ("decode", best_seconds(lambda: decode(case.data))),
            ("decode", best_seconds(lambda: WBXMLReader(case.data).parse())),
            ("encode", best_seconds(lambda: encode(case.tree))),
            ("encode", best_seconds(write_theirs)),
        ]
    results = []
    for (op, ours), (_, theirs) in zip(timings[::2], timings[1::2], strict=True):
        name = f"{op} {case.name}, {len(case.data):,} B"
        if large:
            mb = len(case.data) / 1e6
            results.append(Result(name, "MB/s", mb / ours, mb / theirs))
        else:
            results.append(Result(name, "µs", ours * 1e6, theirs * 1e6))
    return results


def table(results: list[Result]) -> str:
    lines = [
        "| benchmark | unit | sentry | pyactivesync | ratio (sentry/pyactivesync) |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.unit} | {r.sentry:.2f} | {r.pyactivesync:.2f} | {r.ratio:.2f} |"
        )
    return "\n".join(lines)


def run() -> dict[str, Any]:
    """Measure everything; return the JSON-ready report."""
    cases = build_cases()
    results = [r for i, case in enumerate(cases) for r in measure(case, large=i == 3)]
    provision_us = results[0].sentry
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "repeat": REPEAT,
        "results": [{**asdict(r), "ratio": r.ratio} for r in results],
        "target": {
            "provision_decode_us": TARGET_PROVISION_DECODE_US,
            "measured_us": provision_us,
            "met": provision_us <= TARGET_PROVISION_DECODE_US,
        },
        "markdown": table(results),
    }


def main() -> None:
    report = run()
    print(report["markdown"])
    target = report["target"]
    verdict = "met" if target["met"] else "MISSED"
    print(
        f"\nProvision decode target ≤ {target['provision_decode_us']:.0f} µs: "
        f"{verdict} ({target['measured_us']:.2f} µs)"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
