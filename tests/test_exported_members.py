"""Every module of ``sentry`` has a curated ``__all__``: each listed name exists, and
each public class or function defined there is listed (httpx's exported-members test)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import sentry

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(sentry.__path__, "sentry.") if m.name != "sentry.__main__"
)


def test_every_package_is_walked() -> None:
    for package in ("eas", "policy", "store", "proxy", "admin", "observability", "testing"):
        assert any(m.startswith(f"sentry.{package}.") for m in MODULES), package


@pytest.mark.parametrize("name", MODULES)
def test_all_is_curated(name: str) -> None:
    module = importlib.import_module(name)
    listed = getattr(module, "__all__", None)
    if listed is None:  # a package marker: fine as long as it defines nothing public
        assert not _defined(module), f"{name} defines public names but has no __all__"
        return
    exported = set(listed)
    assert len(exported) == len(listed), "duplicates in __all__"
    assert all(hasattr(module, n) for n in exported)
    assert _defined(module) <= exported


def _defined(module: object) -> set[str]:
    name = getattr(module, "__name__", "")
    return {
        n
        for n, obj in vars(module).items()
        if not n.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and obj.__module__ == name
    }
