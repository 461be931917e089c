"""Micro-benchmarks: the single-function scripts of bench/, run as subprocesses.

Approach. Each script (``bench_wbxml``, ``bench_request``, ``bench_policy``,
``bench_store``, ``bench_console``, ``bench_pg_list``, ...: ``MICRO``) stays a standalone program
owned by its module's author; this runs each in its own process with a time
limit, keeps its printed table and,
when the script writes a JSON report under ``bench/results/``, the JSON it
wrote during this run. A script that is missing (still being written) or
fails is reported as such and does not stop the others.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from bench.proc import ROOT

__all__ = ["MICRO", "micro_markdown", "run_micro"]

BENCH = ROOT / "bench"
# script -> (what it measures, the JSON it writes or None, time limit in seconds)
MICRO: dict[str, tuple[str, str | None, float]] = {
    "bench_wbxml": ("WBXML decode/encode vs pyactivesync", "wbxml.json", 300),
    "bench_request": ("parse_request, plain and base64 query", None, 120),
    "bench_logline": ("access-log line: structlog chain vs direct renderer", None, 120),
    "bench_headers": ("a request's headers, device bytes to backend bytes", None, 120),
    "bench_process": ("process_* metrics with 20,000 descriptors open", None, 120),
    "bench_handshake": ("OpenSSL's server handshake, full and resumed", None, 120),
    "bench_mpvalues": ("one metric update under workers: stock vs FastMmapedValue", None, 120),
    "bench_policy": ("decide() with 100,000 associations", "bench_policy.json", 300),
    "bench_easpolicy": (
        "gateway ActiveSync policy gate, 100,000 associations",
        "bench_easpolicy.json",
        300,
    ),
    "bench_store": ("snapshot load of 1,000,000 associations", "bench_store.json", 900),
    "bench_commits": ("first sights at once on a saturated loop: the commit queue", None, 300),
    "bench_touchflush": ("a last-seen flush beside a busy loop: one statement", None, 300),
    "bench_console": ("web console pages over 100,000 associations", "bench_console.json", 300),
    "bench_pg_list": ("PostgreSQL admin queries, 100,000 associations", "bench_pg_list.json", 900),
}


def _run_one(name: str, json_name: str | None, limit: float) -> dict[str, Any]:
    script = BENCH / f"{name}.py"
    if not script.exists():
        return {"status": "missing", "output": f"{script.name} does not exist (yet)"}
    started = time.time()
    try:
        done = subprocess.run(
            [sys.executable, str(script)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=limit,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "output": f"stopped after {limit:.0f} s"}
    result: dict[str, Any] = {
        "status": "ok" if done.returncode == 0 else f"exit {done.returncode}",
        "seconds": time.time() - started,
        "output": done.stdout.strip() or done.stderr.strip()[-2000:],
    }
    path = ROOT / "bench" / "results" / json_name if json_name else None
    if path is not None and path.exists() and path.stat().st_mtime >= started:
        result["json"] = json.loads(path.read_text())
    return result


def run_micro(names: list[str] | None = None) -> dict[str, Any]:
    """Run the micro-benchmarks (all, or ``names``); return the report."""
    report: dict[str, Any] = {"scenario": "micro", "results": {}}
    for name in names or list(MICRO):
        what, json_name, limit = MICRO[name]
        print(f"micro: {name} ({what})", flush=True)
        result = _run_one(name, json_name, limit)
        result["what"] = what
        report["results"][name] = result
        print(f"  {result['status']}", flush=True)
    return report


def micro_markdown(report: dict[str, Any]) -> str:
    parts = []
    for name, r in report["results"].items():
        head = f"**{name}** ({r['what']}): {r['status']}"
        parts.append(f"{head}\n\n{r['output']}" if r["status"] == "ok" else head)
    return "\n\n".join(parts)
