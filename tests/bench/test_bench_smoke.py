"""Smoke test of bench/: every load scenario runs end to end with tiny parameters.

It starts the real processes (demo backend, bare forwarder, ``sentry run``,
load generators) exactly as ``python -m bench`` does, so a change that breaks
the bench fails CI. It checks that each scenario completes and reports what
it measured, never how fast: numbers on a shared CI machine mean nothing.
The scenarios run at the same time to stay within seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = {
    "throughput": [
        "throughput",
        "--devices", "8", "--levels", "2", "--duration", "0.5", "--max-requests", "20",
        "--targets", "direct,bare,bare-tls,gateway,gateway-tls,gateway-uvloop",
    ],
    "held-pings": ["held-pings", "--pings", "10", "--heartbeat", "2", "--ramp-rate", "200"],
    "block": ["block", "--pings", "10", "--blocked", "4"],
    "storm": ["storm", "--pings", "10", "--handshakes", "5", "--generators", "1"],
    "slow-clients": [
        "slow-clients", "--attackers", "30", "--devices", "8", "--duration", "0.5",
    ],
    "fuzz": ["fuzz", "--examples", "5", "--seed", "1"],
    "modeltest": [
        "modeltest", "--examples", "3", "--min-steps", "5", "--max-steps", "10", "--seed", "1",
        "--suite-examples", "2",
    ],
}  # fmt: skip


def test_every_load_scenario_runs(tmp_path: Path) -> None:
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "bench", "--out", str(tmp_path / name), *argv],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, argv in SCENARIOS.items()
    }
    outputs = {}
    try:
        for name, proc in procs.items():
            outputs[name] = proc.communicate(timeout=60)[0]
    finally:
        for proc in procs.values():
            proc.kill()
    for name, proc in procs.items():
        assert proc.returncode == 0, f"{name} failed:\n{outputs[name]}"
        report = json.loads((tmp_path / name / f"{name}.json").read_text())
        assert report["scenario"] == name
        assert (tmp_path / name / f"{name}.md").exists()

    throughput = json.loads((tmp_path / "throughput" / "throughput.json").read_text())
    targets = {row["target"] for row in throughput["rows"]}
    assert targets == {"direct", "bare", "bare-tls", "gateway", "gateway-tls", "gateway-uvloop"}
    assert all(row["requests"] > 0 and row["errors"] == 0 for row in throughput["rows"])
    assert all(not row["warmup_failures"] for row in throughput["rows"])
    assert "req_per_core_s_vs_bare_tls" in throughput["ratios"]["gateway-tls@2"]

    held = json.loads((tmp_path / "held-pings" / "held-pings.json").read_text())
    assert held["held"] == 10
    assert held["answered_ok"] == 10

    block = json.loads((tmp_path / "block" / "block.json").read_text())
    assert block["status_129"] == 4
    assert block["unblocked_still_held"] == 6

    storm = json.loads((tmp_path / "storm" / "storm.json").read_text())
    assert storm["held_before"] == 10 and storm["storm_seconds"] > 0
    assert storm["handshake"]["handshakes"] == 5 and storm["cpu_per_ping_ms"] > 0
    assert storm["listen_overflows"] >= 0  # the kernel's count over the storm (Linux)

    slow = json.loads((tmp_path / "slow-clients" / "slow-clients.json").read_text())
    assert slow["attacker_ready"]["open"] >= 1
    assert slow["baseline"]["requests"] > 0 and slow["attacked"]["requests"] > 0

    fuzz = json.loads((tmp_path / "fuzz" / "fuzz.json").read_text())
    assert fuzz["inputs"] == 5 and fuzz["problems"] == []

    model = json.loads((tmp_path / "modeltest" / "modeltest.json").read_text())
    assert model["long_profile"]["examples"] == 3 and model["suite_profile"]["examples"] == 2
    assert model["long_profile"]["steps"] >= 15


def _bench_with_workers(tmp_path: Path, dsn: str, *argv: str) -> dict[str, Any]:
    """``python -m bench <argv> --workers 2 --dsn <dsn>``: its JSON report."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--out", str(tmp_path), *argv, "--workers", "2",
         "--dsn", dsn],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout
    report: dict[str, Any] = json.loads((tmp_path / f"{argv[0]}.json").read_text())
    assert report["options"]["workers"] == 2
    return report


def test_the_storm_runs_with_workers_on_postgresql(tmp_path: Path, pg_server_dsn: str) -> None:
    """``bench storm --workers 2 --dsn``: two worker processes on a database made
    for the run (dropped after it); every Ping held again."""
    argv = ("storm", "--pings", "12", "--handshakes", "4", "--generators", "1")
    storm = _bench_with_workers(tmp_path, pg_server_dsn, *argv)
    assert storm["held_before"] == 12
    # the machine's share is reported (CPU counts in 10 ms ticks: a 12-Ping storm may take none)
    assert {"gateway_cpu_s", "generators_cpu_s", "backend_cpu_s"} <= storm.keys()
    assert "CPU during the storm: gateway" in (tmp_path / "storm.md").read_text()


def test_held_pings_run_with_workers_on_postgresql(tmp_path: Path, pg_server_dsn: str) -> None:
    """``bench held-pings --workers 2 --dsn``: every Ping held by the two workers
    and answered at its heartbeat; RSS over the node's processes."""
    held = _bench_with_workers(tmp_path, pg_server_dsn, "held-pings", "--pings", "12",
                               "--heartbeat", "2")  # fmt: skip
    assert held["held"] == 12 and held["answered_ok"] == 12
    assert held["gateway_rss_held_mib"] > 0


def test_held_memory_reports_a_held_pings_objects_by_owner() -> None:
    """``python -m bench.held_memory``: the gateway traced, every share printed."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.held_memory", "20", "--lines"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout
    assert "Python bytes per held Ping (20 held, tracemalloc)" in proc.stdout
    assert "gateway: proxy/h1server.py" in proc.stdout  # the device connection is the gateway's
    assert "the 25 largest source lines" in proc.stdout
    assert "sentry/proxy/h1server.py:" in proc.stdout


def test_throughput_rounds_measure_a_base_checkout_beside_this_one(tmp_path: Path) -> None:
    """``--rounds`` interleaves the targets; ``--base-root`` runs another
    checkout's gateway (here this one) as the target gateway-base."""
    argv = [
        "throughput", "--devices", "8", "--levels", "2", "--duration", "0.5",
        "--max-requests", "20", "--targets", "bare,gateway,gateway-base",
        "--rounds", "2", "--base-root", str(ROOT),
    ]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--out", str(tmp_path), *argv],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout
    report = json.loads((tmp_path / "throughput.json").read_text())
    assert sorted((r["round"], r["target"]) for r in report["rows"]) == [
        (1, "bare"), (1, "gateway"), (1, "gateway-base"),
        (2, "bare"), (2, "gateway"), (2, "gateway-base"),
    ]  # fmt: skip
    assert all(r["requests"] > 0 and r["errors"] == 0 for r in report["rows"])
    ratio = report["ratios"]["gateway@2"]
    assert len(ratio["req_per_core_s_vs_base_range"]) == 2
    assert len(report["ratios_by_round"]) == 2
    assert "req per core-second" in proc.stdout and "the base checkout's gateway" in proc.stdout


def _bench_script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``bench/<name> args...`` run from the project's root; it must succeed."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / name), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


def test_the_bulk_commit_micro_benchmark_runs() -> None:
    """``bench/bench_store.py commit``: a bulk Block of 1,000 rows through
    ``AccessState.commit`` on SQLite, each phase reported (it asserts that
    every round committed the 3,001 changes of the block itself)."""
    done = _bench_script("bench_store.py", "commit", "--rounds", "2")
    assert "(3,001 changes), SQLite, 2 rounds" in done.stdout
    for phase in ("plan", "write", "absorb", "total"):
        assert f"| {phase} | " in done.stdout


def test_the_commit_queue_micro_benchmark_runs() -> None:
    """``bench/bench_commits.py``: concurrent first sights on a busy loop, the
    commit queue beside one writer lock per commit (each first sight checks
    that its row was written and applied)."""
    done = _bench_script("bench_commits.py", "3", "1")
    for path in ("one lock per commit", "the queue"):
        assert f"| {path} | 3 |" in done.stdout
        assert f"| {path}, alone | 1 |" in done.stdout
    assert "the queue / one lock per commit:" in done.stdout


def test_the_touch_flush_micro_benchmark_runs() -> None:
    """``bench/bench_touchflush.py``: a flush of last-seen times beside a busy
    loop, both ways of writing it (it checks that every flush was written)."""
    done = _bench_script("bench_touchflush.py", "50", "1")
    assert "| executemany, a step per row |" in done.stdout
    assert "| one statement |" in done.stdout
    assert "one statement / executemany: the flush" in done.stdout


def test_the_log_line_micro_benchmark_runs() -> None:
    """``bench/bench_logline.py``: the access line through structlog's chain and
    ``emit``, on a loop, its render both ways (it asserts that ``JsonLine``
    renders the line as redaction then encoding does) and the request context."""
    done = _bench_script("bench_logline.py")
    for row in ("access line (µs)", "16 a turn (µs)", "render: redacted, encoded (µs)"):
        assert row in done.stdout
    assert "request context (µs)" in done.stdout


def test_the_heap_trim_micro_benchmark_runs() -> None:
    """``bench/bench_heaptrim.py``: the loop's lateness with no trim, a trim in
    a thread and a trim on the loop, and the memory each trim gave back."""
    from sentry.heaptrim import malloc_trim

    if malloc_trim is None:
        pytest.skip("malloc_trim is glibc's (Linux)")
    done = _bench_script("bench_heaptrim.py", "16")
    rows = [line for line in done.stdout.splitlines() if line.startswith("| malloc_trim")]
    assert len(rows) == 2
    assert all(int(row.split("|")[5].split()[0]) >= 8 for row in rows)  # MB given back


def test_the_process_metrics_micro_benchmark_runs() -> None:
    """``bench/bench_process.py``: one collect of prometheus_client's process
    collector beside ``ProcessStats``, with descriptors open; it exits non-zero
    when the two count different descriptors."""
    done = _bench_script("bench_process.py", "500")
    assert "sockets open" in done.stdout
    assert "| prometheus_client ProcessCollector (lists /proc/self/fd) |" in done.stdout
    assert "| ProcessStats (" in done.stdout


def test_the_handshake_micro_benchmark_runs() -> None:
    """``bench/bench_handshake.py``: full and resumed server handshakes with two
    tickets and one (it exits non-zero when an offered ticket is not resumed)."""
    done = _bench_script("bench_handshake.py", "20")
    rows = [
        line
        for line in done.stdout.splitlines()
        if line.startswith("| 2 |") or line.startswith("| 1 |")
    ]
    assert [row.split("|")[2].strip() for row in rows] == ["full", "resumed"] * 2


def test_the_metric_value_micro_benchmark_runs() -> None:
    """``bench/bench_mpvalues.py``: one metric update with each value class (it
    exits non-zero when the two multiprocess values wrote different values)."""
    done = _bench_script("bench_mpvalues.py", "--quick")
    for name in ("MutexValue", "multiprocess, prometheus_client", "FastMmapedValue"):
        assert name in done.stdout


def test_the_request_metrics_micro_benchmark_runs() -> None:
    """``bench/bench_metrics.py``: a request's metrics moved both ways (it exits
    non-zero when the two left different samples)."""
    done = _bench_script("bench_metrics.py", "--quick")
    assert "| inc, dec, observe (prometheus_client's methods, before) |" in done.stdout
    assert "| values moved directly (Metrics.answered) |" in done.stdout


def test_the_headers_micro_benchmark_runs() -> None:
    """``bench/bench_headers.py``: the headers decoded, then decoded and written
    for the backend (its request bytes are checked by the lean client's tests)."""
    done = _bench_script("bench_headers.py", "200")
    assert "| decoded into the request's multidict (baseline) |" in done.stdout
    assert "| of it the upstream leg's part |" in done.stdout
