"""The layering of design.md §2, pinned by a test built from the imports.

Every module of ``sentry/`` is parsed (never imported) and its imports are
collected, function-level ones included; imports under ``if TYPE_CHECKING:``
are type annotations only and are left out. The rules:

- L0 (``errors``, ``model`` (with ``devicepolicy``), ``principals``, ``settings`` ...): stdlib only
  among the gateway's modules, never aiohttp, asyncio, structlog or
  prometheus_client;
- L1 ``eas/`` (the sans-IO protocol core): L0 and itself, no I/O library;
- L2 ``policy/`` (pure decisions): ``eas/``, L0, ``store.base`` and itself,
  no I/O library;
- store implementations reach the policy only through its public modules
  (never a private ``sentry.policy._*``) and never the shell above them;
- the access state and the long-poll registry are not proxy code: nothing
  below ``proxy/`` and ``admin/`` imports them;
- only ``proxy/``, ``admin/``, the composition root and ``testing/`` import aiohttp.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import sentry

ROOT = Path(sentry.__file__).parent
IO_LIBRARIES = frozenset({"aiohttp", "asyncio", "structlog", "prometheus_client"})
L0 = frozenset(
    {
        "sentry",
        "sentry.buildinfo",
        "sentry.compliance",
        "sentry.devicepolicy",
        "sentry.dsn",
        "sentry.errors",
        "sentry.files",
        "sentry.model",
        "sentry.principals",
        "sentry.settings",
        "sentry.settings_directory",
        "sentry.settings_gateway",
        "sentry.settings_identity",
        "sentry.slots",
    }
)
SHELL = (
    "sentry.proxy",
    "sentry.admin",
    "sentry.app",
    "sentry.listeners",
    "sentry.readiness",
    "sentry.cli",
    "sentry.reload",
)
AIOHTTP_ALLOWED = (*SHELL, "sentry.testing", "sentry.supervisor", "sentry.worker")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


@cache
def imports(name: str) -> frozenset[str]:
    """Every module ``name`` imports (absolute names; ``from x import y`` adds
    ``x.y`` when that is a module)."""
    path = modules()[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.add(module)
            found.update(
                f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in modules()
            )
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return frozenset(found)


def _under(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _sentry_imports(name: str) -> set[str]:
    return {i for i in imports(name) if _under(i, "sentry")}


def _io_imports(name: str) -> set[str]:
    return {i.split(".")[0] for i in imports(name)} & IO_LIBRARIES


def test_the_parser_sees_the_known_edges() -> None:
    assert "sentry.policy.planner" in imports("sentry.access")
    assert "sentry.access" in imports("sentry.proxy.context")
    assert "sentry.policy.changes" not in imports("sentry.store.base")  # TYPE_CHECKING only


def test_the_bottom_layer_imports_nothing_above_it_and_no_io_library() -> None:
    wrong = {
        name: sorted((_sentry_imports(name) - L0) | _io_imports(name))
        for name in L0
        if (_sentry_imports(name) - L0) or _io_imports(name)
    }
    assert wrong == {}


def test_the_protocol_core_is_sans_io() -> None:
    wrong = {}
    for name in modules():
        if not _under(name, "sentry.eas"):
            continue
        above = {i for i in _sentry_imports(name) if i not in L0 and not _under(i, "sentry.eas")}
        if above or _io_imports(name):
            wrong[name] = sorted(above | _io_imports(name))
    assert wrong == {}


def test_the_policy_is_pure() -> None:
    wrong = {}
    for name in modules():
        if not _under(name, "sentry.policy"):
            continue
        allowed = ("sentry.policy", "sentry.eas", "sentry.store.base")
        above = {i for i in _sentry_imports(name) if i not in L0 and not _under(i, *allowed)}
        if above or _io_imports(name):
            wrong[name] = sorted(above | _io_imports(name))
    assert wrong == {}


def test_store_implementations_use_the_public_policy_and_nothing_above() -> None:
    wrong = {}
    for name in modules():
        if not _under(name, "sentry.store"):
            continue
        bad = {
            i
            for i in _sentry_imports(name)
            if i.startswith("sentry.policy._")
            or _under(i, *SHELL, "sentry.access", "sentry.longpolls", "sentry.observability")
        }
        if bad:
            wrong[name] = sorted(bad)
    assert wrong == {}


def test_the_access_state_is_below_the_proxy() -> None:
    """``proxy`` imports ``access``; ``access`` and the long-poll registry never import
    ``proxy`` or ``admin`` (the cycle this pins was ``access`` -> ``proxy.longpolls``)."""
    for name in ("sentry.access", "sentry.longpolls", "sentry.aio", "sentry.store_watch"):
        assert not {i for i in _sentry_imports(name) if _under(i, *SHELL)}, name


def test_only_the_shell_imports_aiohttp() -> None:
    users = {n for n in modules() if "aiohttp" in {i.split(".")[0] for i in imports(n)}}
    assert {n for n in users if not _under(n, *AIOHTTP_ALLOWED)} == set()
