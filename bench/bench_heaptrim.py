"""What a heap trim (``sentry.heaptrim``) costs the event loop beside it.

Run: ``.venv/bin/python bench/bench_heaptrim.py [megabytes]``. The process
fills glibc's heap with 4,000-byte blocks (over Python's small-object
allocator, under the mmap threshold), frees the lower ``megabytes`` of them
(240 by default) below blocks that stay, and then runs an event loop whose
task wakes every millisecond and allocates 20 blocks of 2,000 bytes (a loop
that keeps using ``malloc``, as a busy gateway does). Measured side by side
in one run, each over the same window: the loop's worst lateness with no
trim (the baseline), while ``malloc_trim(0)`` runs in a thread (what the
gateway does) and while it runs on the loop itself; and the trim's own time
and the memory it gives back. Each case frees a fresh heap region first.
Linux with glibc only.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable

from sentry.heaptrim import malloc_trim, resident_bytes

BLOCK = 4000


def _fragment(megabytes: int) -> list[bytes]:
    """Free ``megabytes`` of heap below blocks that stay; the blocks kept."""
    freed = megabytes * 2**20 // BLOCK
    blocks = [bytes(BLOCK) for _ in range(freed + freed // 2)]
    del blocks[:freed]
    return blocks


async def _lateness(during: Callable[[], Awaitable[object]], window: float) -> float:
    """The loop's worst lateness (seconds) over ``window`` while ``during`` runs."""
    worst, stop = 0.0, False

    async def ticker() -> None:
        nonlocal worst
        last = time.perf_counter()
        while not stop:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            worst, last = max(worst, now - last - 0.001), now
            _ = [bytes(2000) for _ in range(20)]

    task = asyncio.ensure_future(ticker())
    await asyncio.sleep(0.05)
    worst = 0.0
    t0 = time.perf_counter()
    await during()
    await asyncio.sleep(max(0.0, window - (time.perf_counter() - t0)))
    stop = True
    await task
    return worst


async def _main(megabytes: int) -> None:
    trim = malloc_trim
    if trim is None:
        sys.exit("bench_heaptrim: glibc's malloc_trim is not available here")
    timed: dict[str, tuple[float, int]] = {}

    def trimmed(name: str) -> None:
        before, t0 = resident_bytes(), time.perf_counter()
        trim(0)
        timed[name] = (time.perf_counter() - t0, before - resident_bytes())

    async def nothing() -> None:
        return None

    async def in_thread() -> None:
        await asyncio.to_thread(trimmed, "thread")

    async def on_loop() -> None:
        trimmed("loop")

    window = 0.2
    kept = [_fragment(megabytes)]
    rows = [("no trim (baseline)", await _lateness(nothing, window))]
    kept.append(_fragment(megabytes))
    rows.append(("malloc_trim in a thread (the gateway)", await _lateness(in_thread, window)))
    kept.append(_fragment(megabytes))
    rows.append(("malloc_trim on the loop", await _lateness(on_loop, window)))
    base = rows[0][1]
    print(f"heap trim of {megabytes} MB freed, loop allocating every ms")
    print("| case | worst loop lateness | vs baseline | trim | given back |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for (name, late), key in zip(rows, (None, "thread", "loop"), strict=True):
        seconds, released = timed.get(key, (0.0, 0)) if key else (0.0, 0)
        trim_cell = f"{seconds * 1e3:.1f} ms" if key else "-"
        back = f"{released / 2**20:.0f} MB" if key else "-"
        print(f"| {name} | {late * 1e3:.1f} ms | {late / base:.1f}x | {trim_cell} | {back} |")
    del kept


def main() -> None:
    asyncio.run(_main(int(sys.argv[1]) if len(sys.argv) > 1 else 240))


if __name__ == "__main__":
    main()
