"""``LogFile``: lines of one turn of the event loop written together, in order;
access lines (``gather``) within ``flush_ms``; lines from elsewhere never
overtake them; nothing gathered is lost on close, reopen or a line from
another thread."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from sentry.observability.logfile import GATHER_LINES, GATHER_MAX
from sentry.observability.logging import LogFile


def text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def from_a_thread(write: Any, *args: Any) -> None:
    """``write(*args)`` on another thread (no event loop there), waited for."""
    thread = threading.Thread(target=write, args=args)
    thread.start()
    thread.join()


async def test_the_lines_of_one_turn_are_written_together_at_its_end(tmp_path: Path) -> None:
    path = tmp_path / "gw.log"
    log = LogFile(path)
    for i in range(100):
        log.write(f"line {i}\n")
        log.flush()  # as every writer does after a line: nothing yet
    assert text(path) == ""
    await asyncio.sleep(0)  # the end of the turn
    assert text(path) == "".join(f"line {i}\n" for i in range(100))
    log.close()


async def test_a_line_from_another_thread_writes_what_was_gathered_first(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gw.log"
    log = LogFile(path)
    log.write("first, on the loop\n")
    from_a_thread(log.write, "second, from a thread\n")
    assert text(path) == "first, on the loop\nsecond, from a thread\n"
    log.write("third, on the loop\n")
    await asyncio.sleep(0)
    assert text(path).endswith("second, from a thread\nthird, on the loop\n")
    log.close()


async def test_close_and_reopen_write_what_was_gathered(tmp_path: Path) -> None:
    path = tmp_path / "gw.log"
    log = LogFile(path)
    log.write("before the rotation\n")
    path.rename(tmp_path / "gw.log.1")  # logrotate moved it away
    log.reopen()
    assert text(tmp_path / "gw.log.1") == "before the rotation\n"
    log.write("after the rotation\n")
    log.close()  # before the loop's turn ended
    assert text(path) == "after the rotation\n"
    await asyncio.sleep(0)  # the scheduled drain finds the file closed: no error
    log.drain()


def test_without_a_running_loop_a_line_is_written_at_once(tmp_path: Path) -> None:
    path = tmp_path / "gw.log"
    log = LogFile(path)
    log.write("no loop\n")
    assert text(path) == "no loop\n"
    log.close()


def test_a_line_of_a_loop_that_stopped_is_written_by_the_next_line(tmp_path: Path) -> None:
    path = tmp_path / "gw.log"
    log = LogFile(path)
    loop = asyncio.new_event_loop()

    def last_line() -> None:
        log.write("the loop's last line\n")  # its drain is scheduled for a next turn...
        loop.stop()  # ...that never comes

    try:
        loop.call_soon(last_line)
        loop.run_forever()
        assert text(path) == ""  # gathered, not yet written
        log.write("after the loop\n")  # no loop running: what was gathered goes first
        assert text(path) == "the loop's last line\nafter the loop\n"
    finally:
        loop.close()
        log.close()


async def until_written(path: Path, expected: str) -> None:
    """Wait for the file to hold ``expected`` (bounded by pytest-timeout)."""
    while text(path) != expected:
        await asyncio.sleep(0.005)


async def test_access_lines_wait_for_the_timer_not_the_turn(tmp_path: Path) -> None:
    path = tmp_path / "gw.log"
    log = LogFile(path, flush_ms=20)
    for i in range(3):
        log.gather(f"access {i}\n")
        await asyncio.sleep(0)  # turns end: the access lines still wait
    assert text(path) == ""
    await until_written(path, "access 0\naccess 1\naccess 2\n")  # by the timer
    log.gather("access 3\n")  # the timer fired: a new one is armed
    await until_written(path, "access 0\naccess 1\naccess 2\naccess 3\n")
    log.close()


async def test_a_line_through_write_takes_the_waiting_access_lines_in_order(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gw.log"
    log = LogFile(path, flush_ms=60_000)  # the timer would come too late for this test
    log.gather("access 1\n")
    await asyncio.sleep(0)
    log.gather("access 2\n")
    log.write("an error\n")
    log.flush()
    log.gather("access 3\n")
    await asyncio.sleep(0)  # the end of the error's turn
    assert text(path) == "access 1\naccess 2\nan error\naccess 3\n"
    log.close()


async def test_access_lines_over_the_bound_are_written_at_the_turns_end(tmp_path: Path) -> None:
    path = tmp_path / "gw.log"
    log = LogFile(path, flush_ms=60_000)
    line = "x" * 99 + "\n"
    lines = GATHER_MAX // len(line) + 1
    for _ in range(lines - 1):
        log.gather(line)
    await asyncio.sleep(0)  # below the bound a turn's end writes nothing (the timer would)
    assert text(path) == ""
    log.gather(line)  # the gathered characters reach GATHER_MAX
    await asyncio.sleep(0)
    assert text(path) == line * lines
    log.close()


async def test_access_lines_are_not_lost_on_close_or_to_a_thread(tmp_path: Path) -> None:
    path = tmp_path / "gw.log"
    log = LogFile(path, flush_ms=60_000)
    log.gather("access 1\n")
    from_a_thread(log.write, "from a thread\n")
    assert text(path) == "access 1\nfrom a thread\n"
    log.gather("access 2\n")
    log.close()
    assert text(path) == "access 1\nfrom a thread\naccess 2\n"


async def test_with_flush_ms_0_access_lines_end_their_turn(tmp_path: Path) -> None:
    path = tmp_path / "gw.log"
    log = LogFile(path, flush_ms=0)
    log.gather("access\n")
    assert text(path) == ""
    await asyncio.sleep(0)
    assert text(path) == "access\n"
    log.close()


def test_access_lines_of_a_loop_that_stopped_are_written_and_the_next_loop_times_its_own(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gw.log"
    log = LogFile(path, flush_ms=10)
    first = asyncio.new_event_loop()

    def last_line() -> None:
        log.gather("the first loop's last line\n")  # its timer never fires
        log.write("and an event\n")  # nor does the end of its turn
        first.stop()

    async def on_the_next_loop() -> None:
        log.gather("on the next loop\n")  # what the first gathered goes first
        assert text(path) == "the first loop's last line\nand an event\non the next loop\n"
        log.gather("gathered on the next loop\n")
        log.write("an event on the next loop\n")  # its own end of turn, not the first's
        await asyncio.sleep(0)
        assert text(path).endswith("on the next loop\nan event on the next loop\n")
        log.gather("timed on the next loop\n")  # its own timer
        await until_written(path, text(path) + "timed on the next loop\n")

    try:
        first.call_soon(last_line)
        first.run_forever()
        first.close()
        assert text(path) == ""
        asyncio.run(on_the_next_loop())
    finally:
        log.close()


class Renders:
    """A render that says which lines it rendered, and when."""

    def __init__(self) -> None:
        self.done: list[str] = []

    def __call__(self, line: MutableMapping[str, Any]) -> str:
        if line.get("fail"):
            raise ValueError("hunter2 in a message")
        self.done.append(line["n"])
        return f"rendered {line['n']}\n"


async def test_lines_are_rendered_when_written_in_order_with_texts(tmp_path: Path) -> None:
    path = tmp_path / "gw.log"
    log = LogFile(path, flush_ms=20)
    render = Renders()
    log.gather_line(render, {"n": "a"})
    log.gather("text b\n")
    log.gather_line(render, {"n": "c"})
    await asyncio.sleep(0)
    assert render.done == [] and text(path) == ""  # they wait, unrendered
    await until_written(path, "rendered a\ntext b\nrendered c\n")
    assert render.done == ["a", "c"]
    log.close()


async def test_so_many_lines_to_render_are_rendered_and_written_at_the_turns_end(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gw.log"
    log = LogFile(path, flush_ms=60_000)
    render = Renders()
    for n in range(GATHER_LINES - 1):
        log.gather_line(render, {"n": str(n)})
    await asyncio.sleep(0)
    assert render.done == []
    log.gather_line(render, {"n": "last"})
    assert render.done == []  # not in the caller's code
    await asyncio.sleep(0)
    assert render.done == [*map(str, range(GATHER_LINES - 1)), "last"]
    assert text(path).splitlines()[-1] == "rendered last"
    log.close()


async def test_a_line_that_cannot_be_rendered_is_replaced_by_one_saying_so(tmp_path: Path) -> None:
    path = tmp_path / "gw.log"
    log = LogFile(path, flush_ms=60_000)
    render = Renders()
    log.gather_line(render, {"n": "a"})
    log.gather_line(render, {"n": "b", "fail": True})
    log.gather_line(render, {"n": "c"})
    log.close()
    a, failed, c = text(path).splitlines()
    assert (a, c) == ("rendered a", "rendered c")
    assert json.loads(failed) == {
        "event": "log_line_failed",
        "level": "error",
        "error": "ValueError",
    }


async def test_lines_are_rendered_at_once_off_the_loop_or_without_waiting(tmp_path: Path) -> None:
    path = tmp_path / "gw.log"
    log = LogFile(path, flush_ms=0)  # written at the end of the turn: nothing to gather them with
    render = Renders()
    log.gather_line(render, {"n": "a"})
    assert render.done == ["a"] and text(path) == ""
    await asyncio.sleep(0)
    assert text(path) == "rendered a\n"
    log.close()
    path = tmp_path / "gw2.log"
    log = LogFile(path, flush_ms=60_000)
    log.gather_line(render, {"n": "b"})
    from_a_thread(log.gather_line, render, {"n": "from a thread"})
    assert text(path) == "rendered b\nrendered from a thread\n"
    log.close()


async def test_a_full_disk_never_fails_the_line_that_fills_the_batch(tmp_path: Path) -> None:
    """/dev/full refuses every write (ENOSPC): an access line, the 32nd or the
    64 KiB-th included, only joins the others; the write that fails is the
    loop's drain's, and it loses the lines (counted, said once on stderr):
    it raises neither into the request's code that logged the line nor into
    the loop (whose exception handler would log to the same full disk)."""
    failures: list[BaseException | None] = []
    asyncio.get_running_loop().set_exception_handler(
        lambda _loop, context: failures.append(context.get("exception"))
    )
    log = LogFile("/dev/full", flush_ms=60_000)
    render = Renders()
    for n in range(GATHER_LINES + 1):
        log.gather_line(render, {"n": str(n)})  # raised OSError at the 32nd before
    for _ in range(GATHER_MAX // 1000 + 1):
        log.gather("x" * 999 + "\n")
    await asyncio.sleep(0)  # the turn ends: its drain writes, and fails
    assert failures == [] and log.losses.count >= 1
    assert not log._pending and log._lines == log._size == 0  # nothing kept to grow
    log.close()
