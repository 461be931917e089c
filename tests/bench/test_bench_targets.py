"""The target lines bench prints under the throughput table.

``bench`` is imported in a child process started in the project's root, as
``python -m bench`` runs (here ``bench`` would name this tests folder)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _targets(gateway_p50: float, bare_p50: float, direct_p50: float = 1.0) -> list[str]:
    entry = {
        "req_per_core_s_vs_bare": 0.9,
        "added_p50_ms_vs_bare": gateway_p50 - bare_p50,
        "added_p99_ms_vs_bare": 0.0,
        "added_p50_ms_vs_direct": gateway_p50 - direct_p50,
        "added_p99_ms_vs_direct": 0.0,
    }
    report = {
        "options": {"levels": [1, 4, 64]},
        "ratios": {"gateway@1": entry, "gateway@64": entry},
    }
    code = (
        "import json, sys\n"
        "from bench.__main__ import throughput_targets\n"
        "print(json.dumps(throughput_targets(json.loads(sys.stdin.read()))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, input=json.dumps(report),
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    lines: list[str] = json.loads(done.stdout)
    return lines


def test_the_added_latency_target_is_measured_against_what_the_bare_forwarder_adds() -> None:
    """Issue #14: the gateway's added p50 over direct may exceed the bare
    forwarder's by at most 0.3 ms, at 1 and 4 connections (not 64)."""
    met = _targets(gateway_p50=1.9, bare_p50=1.7)
    missed = _targets(gateway_p50=2.1, bare_p50=1.7)
    line = "gateway@1: p50 adds +0.20 ms more than the bare forwarder adds"
    assert any(x.startswith(f"- {line}") and x.endswith(": met") for x in met)
    assert any("gateway@1: p50 adds +0.40 ms" in x and x.endswith("MISSED") for x in missed)
    assert not any("gateway@64: p50 adds" in x for x in met + missed)


def _child(code: str, data: object) -> object:
    done = subprocess.run(
        [sys.executable, "-c", "import json, sys\n" + code], cwd=ROOT, input=json.dumps(data),
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return json.loads(done.stdout)


def test_rounds_give_each_ratio_its_median_and_range() -> None:
    """``throughput --rounds N`` interleaves the targets N times: a machine
    that drifts during the run moves one round's targets alike, and the
    ratios reported are the medians over the rounds, with their range."""
    rounds = [
        {"gateway@4": {"req_per_core_s_vs_bare": v, "req_per_core_s_vs_base": b}}
        for v, b in ((0.70, 1.10), (0.90, 1.30), (0.78, 1.20))
    ]
    code = (
        "from bench.throughput import median_ratios\n"
        "print(json.dumps(median_ratios(json.loads(sys.stdin.read()))))\n"
    )
    out = _child(code, rounds)
    assert out == {
        "gateway@4": {
            "req_per_core_s_vs_bare": 0.78,
            "req_per_core_s_vs_bare_range": [0.70, 0.90],
            "req_per_core_s_vs_base": 1.20,
            "req_per_core_s_vs_base_range": [1.10, 1.30],
        }
    }


def test_the_held_ping_target_is_32_kib_with_tls() -> None:
    code = (
        "from bench.__main__ import held_targets\n"
        "print(json.dumps(held_targets(json.loads(sys.stdin.read()))))\n"
    )
    report = {"held": 3000, "answered_on_time": 3000, "options": {"pings": 3000}}
    tls = _child(
        code, {**report, "rss_per_ping_kib": 30.0, "options": {"pings": 3000, "tls": True}}
    )
    plain = _child(code, {**report, "rss_per_ping_kib": 30.0})
    assert isinstance(tls, list) and isinstance(plain, list)
    assert tls[0].startswith("- RSS per held Ping 30.0 KiB at 3,000 with TLS on (target <= 32")
    assert tls[0].endswith(": met")
    assert plain[0].endswith(": MISSED") and "target <= 16 KiB" in plain[0]


def test_a_tls_gateway_is_measured_against_the_bare_forwarder_with_tls() -> None:
    """``bare-tls`` is the like-for-like baseline of a gateway serving TLS: its
    ratios appear beside the plain ones, only for the TLS gateways, and the
    target verdict uses them."""

    def row(target: str, per_core: float, p50: float) -> dict[str, object]:
        return {
            "target": target, "level": 4, "req_per_s": per_core / 2,
            "req_per_server_core_s": per_core, "p50_ms": p50, "p99_ms": p50 * 3,
        }  # fmt: skip

    rows = [
        row("direct", 4000.0, 1.0),
        row("bare", 2000.0, 2.0),
        row("bare-tls", 1600.0, 2.4),
        row("gateway", 1700.0, 2.2),
        row("gateway-tls", 1400.0, 2.9),
    ]
    code = (
        "from bench.throughput import _ratios\n"
        "print(json.dumps(_ratios(json.loads(sys.stdin.read()), (4,))))\n"
    )
    ratios = _child(code, rows)
    assert isinstance(ratios, dict)
    assert "req_per_core_s_vs_bare_tls" not in ratios["gateway@4"]
    tls = ratios["gateway-tls@4"]
    assert abs(tls["req_per_core_s_vs_bare_tls"] - 1400 / 1600) < 1e-9
    assert abs(tls["req_per_core_s_vs_bare"] - 1400 / 2000) < 1e-9
    assert abs(tls["added_p50_ms_vs_bare_tls"] - 0.5) < 1e-9
    code = (
        "from bench.__main__ import throughput_targets\n"
        "print(json.dumps(throughput_targets(json.loads(sys.stdin.read()))))\n"
    )
    lines = _child(code, {"options": {"levels": [4]}, "ratios": ratios})
    assert isinstance(lines, list)
    (verdict,) = [x for x in lines if x.startswith("- gateway-tls@4: req per core-second")]
    assert "0.88x the bare forwarder with TLS; 0.70x the bare forwarder without TLS" in verdict
    assert verdict.endswith(": met")
    (latency,) = [x for x in lines if x.startswith("- gateway-tls@4: p50 adds")]
    assert "+0.50 ms more than the bare forwarder with TLS adds" in latency
    assert latency.endswith("MISSED")


def test_every_other_round_runs_the_targets_in_reverse() -> None:
    code = (
        "from bench.throughput import round_order\n"
        "targets = tuple(json.loads(sys.stdin.read()))\n"
        "print(json.dumps([list(round_order(targets, n)) for n in range(3)]))\n"
    )
    out = _child(code, ["bare", "gateway", "gateway-base"])
    assert out == [
        ["bare", "gateway", "gateway-base"],
        ["gateway-base", "gateway", "bare"],
        ["bare", "gateway", "gateway-base"],
    ]
