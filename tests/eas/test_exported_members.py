"""Every module of the request/response/commands layer has a curated ``__all__``:
each listed name exists, and each public class or function defined there is listed."""

from __future__ import annotations

import importlib
import inspect

import pytest

MODULES = [
    "sentry.eas._b64query",
    "sentry.eas.errors",
    "sentry.eas.identity",
    "sentry.eas.request",
    "sentry.eas.responses",
    "sentry.eas.versions",
    "sentry.eas.commands",
    "sentry.eas.commands._fields",
    "sentry.eas.commands.longpoll",
    "sentry.eas.commands.ping",
    "sentry.eas.commands.provision",
    "sentry.eas.commands.settings",
    "sentry.eas.commands.sync",
    "sentry.cli",
]


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
