"""One metric update under ``gateway.workers``: prometheus_client's multiprocess
value against ``sentry.observability.mpvalues.FastMmapedValue``, with the
single-process value (``MutexValue``) beside them.

Approach. Each worker writes every update into its memory-mapped file
(prometheus_client's multiprocess mode). The stock value asks for the process
id on every update and looks the value's place up by key; the fast one writes
at the place found when it was made. The three are timed in one process on a
multiprocess directory of their own (best of 5 x 200,000 ``inc`` each, and
the same for ``set``); the ratio is against the stock multiprocess value.

    .venv/bin/python bench/bench_mpvalues.py [--quick]
"""

from __future__ import annotations

import os
import sys
import tempfile
import timeit
from typing import Any


def main(argv: list[str]) -> None:
    quick = "--quick" in argv
    number, repeat = (2_000, 2) if quick else (200_000, 5)
    with tempfile.TemporaryDirectory() as folder:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
        from prometheus_client import values

        from sentry.observability import mpvalues

        stock_class = values.MultiProcessValue()
        values.ValueClass = stock_class
        assert mpvalues.install()
        fast_class = values.ValueClass

        def args(name: str) -> tuple[Any, ...]:
            return ("counter", name, f"{name}_total", ("a",), ("x",), "help")

        made = {
            "single process (MutexValue)": values.MutexValue(*args("mutex")),
            "multiprocess, prometheus_client": stock_class(*args("stock")),
            "multiprocess, FastMmapedValue": fast_class(*args("fast")),
        }
        rows = []
        for name, value in made.items():
            inc = min(timeit.repeat(lambda v=value: v.inc(1), number=number, repeat=repeat))
            put = min(timeit.repeat(lambda v=value: v.set(2.0), number=number, repeat=repeat))
            rows.append((name, inc / number * 1e6, put / number * 1e6))
        # what each multiprocess value left in its file, read back as a scrape does
        stock, fast = made["multiprocess, prometheus_client"], made["multiprocess, FastMmapedValue"]
        for value in (stock, fast):
            value.inc(0.5)
        written = [v._file.read_value(v._key) for v in (stock, fast)]  # type: ignore[attr-defined]
        if written[0] != written[1] or written[0][0] != 2.5:
            sys.exit(f"the two wrote different values: {written}")
    base_inc, base_set = rows[1][1], rows[1][2]
    print(f"one metric update, best of {repeat} x {number:,}\n")
    print("| value | inc µs | ratio | set µs | ratio |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, inc_us, set_us in rows:
        print(f"| {name} | {inc_us:.3f} | {inc_us / base_inc:.2f} | {set_us:.3f} "
              f"| {set_us / base_set:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
