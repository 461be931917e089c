"""Every admin module has a curated ``__all__``: each listed name exists, and each
public class or function defined there is listed."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import sentry.admin

MODULES = sorted(f"sentry.admin.{m.name}" for m in pkgutil.iter_modules(sentry.admin.__path__))


def test_every_module_is_checked() -> None:
    assert len(MODULES) >= 19


@pytest.mark.parametrize("name", MODULES)
def test_all_is_curated(name: str) -> None:
    module = importlib.import_module(name)
    exported = set(module.__all__)
    assert len(exported) == len(module.__all__), "duplicates in __all__"
    assert all(hasattr(module, n) for n in exported)
    defined = {
        n
        for n, obj in vars(module).items()
        if not n.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and obj.__module__ == name
    }
    assert defined <= exported
