"""Writing results: JSON and markdown under bench/results/, plots if matplotlib is there.

Every scenario returns a JSON-ready dict; ``write`` stores it as
``<name>.json`` and its tables as ``<name>.md`` beside a header with the date
and the machine, so a result file always says where it was measured. Plots
(latency vs concurrency, RSS vs held Pings) are drawn only when matplotlib
happens to be installed; it is not a dependency of the project.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from bench.proc import machine_info

__all__ = ["header", "plot", "write"]


def header() -> str:
    m = machine_info()
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return (
        f"{when}; {m['cores']} cores, {m['cpu_model']}, {m['memory_gib']} GiB, "
        f"Linux {m['kernel']}, Python {m['python']}"
    )


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, set):
        return sorted(_clean(v) for v in value)
    if hasattr(value, "__dataclass_fields__"):
        return _clean(vars(value))
    return value


def write(out: Path, name: str, report: dict[str, Any], markdown: str) -> Path:
    """``out/<name>.json`` and ``out/<name>.md``; return the markdown path."""
    out.mkdir(parents=True, exist_ok=True)
    doc = {"machine": machine_info(), "date": time.time(), **report}
    (out / f"{name}.json").write_text(json.dumps(_clean(doc), indent=2) + "\n")
    path = out / f"{name}.md"
    path.write_text(f"# bench: {name}\n\n{header()}\n\n{markdown}\n")
    return path


def plot(out: Path, throughput: dict[str, Any] | None, held: dict[str, Any] | None) -> list[Path]:
    """PNG plots when matplotlib is importable; [] otherwise."""
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return []
    made = []
    if throughput:
        fig, ax = plt.subplots(figsize=(7, 4))
        targets = sorted({r["target"] for r in throughput["rows"]})
        for target in targets:
            rows = [r for r in throughput["rows"] if r["target"] == target]
            levels = [r["level"] for r in rows]
            ax.plot(levels, [r["p50_ms"] for r in rows], marker="o", label=f"{target} p50")
            ax.plot(levels, [r["p99_ms"] for r in rows], marker="x", ls="--", label=f"{target} p99")
        ax.set(xscale="log", yscale="log", xlabel="connections", ylabel="latency (ms)")
        ax.set_title("EAS mix: latency vs concurrency")
        ax.legend(fontsize=7)
        made.append(out / "latency_vs_concurrency.png")
        fig.savefig(made[-1], dpi=100, bbox_inches="tight")
        plt.close(fig)
    if held and held.get("rss_samples"):
        fig, ax = plt.subplots(figsize=(7, 4))
        xs, ys = zip(*held["rss_samples"], strict=True)
        ax.plot(xs, ys, marker=".")
        ax.set(xlabel="held Pings", ylabel="gateway RSS growth (MiB)")
        ax.set_title("gateway RSS vs held Pings")
        made.append(out / "rss_vs_held_pings.png")
        fig.savefig(made[-1], dpi=100, bbox_inches="tight")
        plt.close(fig)
    return made
