"""``sentry.observability.mpvalues``: under ``gateway.workers`` a metric update
writes the same bytes prometheus_client's multiprocess value writes, without
its per-update process-id check; outside multiprocess mode nothing changes.

Each test gives prometheus_client a multiprocess directory of its own and a
value class made for it (``monkeypatch`` restores the module's)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, mmap_dict, values
from prometheus_client.multiprocess import MultiProcessCollector

from sentry.observability import mpvalues


def _use(monkeypatch: pytest.MonkeyPatch, folder: Path) -> type:
    """prometheus_client in multiprocess mode on ``folder`` with a stock value class."""
    folder.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    stock = values.MultiProcessValue()
    monkeypatch.setattr(values, "ValueClass", stock)
    return stock


def _exercise(children: int) -> None:
    """Every kind of update, on metrics of every type, ``children`` label values each."""
    registry = CollectorRegistry()
    requests = Counter("t_requests", "requests", ["command"], registry=registry)
    held = Gauge("t_held", "held", ["command"], multiprocess_mode="livesum", registry=registry)
    up = Gauge("t_up", "up", multiprocess_mode="livemin", registry=registry)
    latency = Histogram("t_latency_seconds", "latency", ["command"], registry=registry)
    for i in range(children):
        name = f"Command{i:05d}"
        requests.labels(name).inc()
        requests.labels(name).inc(2.5)
        held.labels(name).inc()
        held.labels(name).dec(0.5)
        latency.labels(name).observe(0.003 * (i % 7))
    up.set(1)
    up.set(0)
    # the first child again, after the file has grown (and been mapped anew)
    requests.labels("Command00000").inc(10)
    held.labels("Command00000").set(42)


def _samples(folder: Path) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(folder))
    return sorted(
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in registry.collect()
        for s in family.samples
    )


@pytest.mark.parametrize("children", [3, 800])  # 800: the files outgrow their first 64 KiB
def test_workers_see_the_same_samples_as_with_prometheus_clients_own_value(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, children: int
) -> None:
    stock = _use(monkeypatch, tmp_path / "stock")
    _exercise(children)
    stock.close_all_files()  # type: ignore[attr-defined]

    fast_base = _use(monkeypatch, tmp_path / "fast")
    assert mpvalues.install() and mpvalues.installed()
    assert values.ValueClass is not fast_base and issubclass(values.ValueClass, fast_base)
    assert mpvalues.install()  # again: nothing more
    _exercise(children)
    fast_base.close_all_files()  # type: ignore[attr-defined]

    grown = max(f.stat().st_size for f in (tmp_path / "fast").iterdir())
    if children > 3:
        assert grown > 1 << 16
    assert _samples(tmp_path / "fast") == _samples(tmp_path / "stock")
    assert {f.name for f in (tmp_path / "fast").iterdir()} == {
        f.name for f in (tmp_path / "stock").iterdir()
    }


def test_outside_multiprocess_mode_nothing_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(values, "ValueClass", values.MutexValue)
    assert not mpvalues.install() and not mpvalues.installed()
    assert values.ValueClass is values.MutexValue


def test_a_prometheus_client_that_keeps_its_files_otherwise_keeps_its_own_value(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stock = _use(monkeypatch, tmp_path / "mp")
    original: Callable[..., None] = mmap_dict.MmapedDict.__init__

    def renamed(self: mmap_dict.MmapedDict, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)
        self._offsets = self.__dict__.pop("_positions")  # a later version's name, say

    monkeypatch.setattr(mmap_dict.MmapedDict, "__init__", renamed)
    assert not mpvalues.install()
    assert values.ValueClass is stock


def test_after_a_new_process_id_updates_go_to_the_new_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """prometheus_client's fork check, still made by ``get``: every value moves
    to new files named after the new process id, and updates follow it there."""
    (tmp_path / "mp").mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "mp"))
    pid = [1000]
    base = values.MultiProcessValue(process_identifier=lambda: pid[0])
    monkeypatch.setattr(values, "ValueClass", base)
    assert mpvalues.install()
    registry = CollectorRegistry()
    first = Counter("t_first", "first", registry=registry)
    second = Counter("t_second", "second", registry=registry)
    first.inc(3)
    second.inc(4)
    # the new process's file already holds a value (a pid used before): the
    # two are placed after it, elsewhere than in the old file
    earlier = mmap_dict.MmapedDict(str(tmp_path / "mp" / "counter_1001.db"))
    earlier.write_value(mmap_dict.mmap_key("t_old", "t_old_total", [], [], "old"), 9.0, 0.0)
    earlier.close()
    pid[0] = 1001  # "forked"
    first._value.get()  # the check runs: both values move to the child's files
    second.inc(7)
    first.inc(1)
    base.close_all_files()  # type: ignore[attr-defined]
    child = mmap_dict.MmapedDict.read_all_values_from_file(str(tmp_path / "mp" / "counter_1001.db"))
    assert {key.split('"')[1]: value for key, value, _, _ in child} == {
        "t_old": 9.0,
        "t_first": 1.0,
        "t_second": 7.0,
    }
