"""``python -m bench._opcodes_boot <python> -m sentry run ...``: the gateway,
unchanged, with a bytecode counter on its main thread (``bench/opcodes.py``).

SIGUSR1 starts counting (clearing what was counted), SIGUSR2 stops and writes
``{"file:line:qualname": bytecodes}`` to ``$SENTRY_BENCH_OPCODES`` as JSON.
The counter is a trace function with ``f_trace_opcodes``: every frame begun
or resumed on the main thread while it is set counts its own opcode events.
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import sys
from collections import Counter
from types import CodeType, FrameType
from typing import Any

_counts: Counter[CodeType] = Counter()


def _local(frame: FrameType, event: str, _arg: Any) -> Any:
    if event == "opcode":
        _counts[frame.f_code] += 1
    return _local


def _tracer(frame: FrameType, _event: str, _arg: Any) -> Any:
    frame.f_trace_opcodes = True
    return _local


def _start(*_: object) -> None:
    _counts.clear()
    sys.settrace(_tracer)


def _stop(*_: object) -> None:
    sys.settrace(None)
    out: Counter[str] = Counter()
    for code, n in _counts.items():
        out[f"{code.co_filename}:{code.co_firstlineno}:{code.co_qualname}"] += n
    path = os.environ["SENTRY_BENCH_OPCODES"]
    with open(path + ".tmp", "w", encoding="utf-8") as fh:
        json.dump(dict(out), fh)
    os.replace(path + ".tmp", path)


def main(argv: list[str]) -> None:
    # argv: <python> -m sentry run --config <file>
    if len(argv) < 3 or argv[1:3] != ["-m", "sentry"]:
        raise SystemExit("usage: python -m bench._opcodes_boot <python> -m sentry ARGS...")
    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _stop)
    sys.argv = ["sentry", *argv[3:]]
    runpy.run_module("sentry", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
