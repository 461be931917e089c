"""``LogFile``: lines of one turn of the event loop written together, in order;
lines from elsewhere never overtake them; nothing gathered is lost on close,
reopen or a line from another thread."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from sentry.observability.logging import LogFile


def text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


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
    thread = threading.Thread(target=log.write, args=("second, from a thread\n",))
    thread.start()
    thread.join()
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
