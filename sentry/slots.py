"""Constructors that fill a frozen, slotted dataclass's slots directly (L0, stdlib only).

Approach. A frozen dataclass's ``__init__`` assigns each field through
``object.__setattr__`` (about 100 ns a field); loading a million associations
would pay that for 30 million fields. ``fast_constructor`` generates, once per
class, a function that sets every slot through its member descriptor (the
technique ``dataclasses`` itself uses: generated source, ``exec``), about
40% faster. It skips ``__init__`` and ``__post_init__``: use it only to
rebuild values that were validated when first made (rows read back from the
store). Arguments are positional, in field order (a store reading a row of
columns), or keyword-only with ``keywords=True`` (code that names each field).
Store implementations and the policy both use it, so it lives at the bottom
layer, not inside ``policy/``.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["fast_constructor", "fast_setter"]

T = TypeVar("T")


def fast_constructor(cls: type[T], *, keywords: bool = False) -> Callable[..., T]:
    """A constructor for frozen slotted dataclass ``cls`` (no validation):
    positional in field order, or keyword-only (every field named) with
    ``keywords``."""
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    namespace: dict[str, Any] = {"new": object.__new__, "cls": cls}
    for i, name in enumerate(names):
        descriptor = cls.__dict__.get(name)
        if descriptor is None or type(descriptor).__name__ != "member_descriptor":
            raise TypeError(f"{cls.__name__}.{name} is not a slot")
        namespace[f"set{i}"] = descriptor.__set__
    args = names if keywords else [f"v{i}" for i in range(len(names))]
    params = ("*, " if keywords else "") + ", ".join(args)
    body = "".join(f"    set{i}(obj, {arg})\n" for i, arg in enumerate(args))
    exec(f"def make({params}):\n    obj = new(cls)\n{body}    return obj\n", namespace)
    make: Callable[..., T] = namespace["make"]
    return make


def fast_setter(cls: type[T], name: str, *more: str) -> Callable[..., T]:
    """``dataclasses.replace(obj, name=value)`` for one field, about twice as
    fast; with ``more`` names, ``replaced(obj, value, *more_values)`` sets
    each named field (values in the order the names are given)."""
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    index = names.index(name)
    values = operator.attrgetter(*names)
    make = fast_constructor(cls)
    if more:
        return _multi_setter(make, values, [index, *(names.index(n) for n in more)])

    def replaced(obj: T, value: Any) -> T:
        current = values(obj)
        return make(*current[:index], value, *current[index + 1 :])

    return replaced


def _multi_setter(
    make: Callable[..., T], values: Callable[[T], Any], at: list[int]
) -> Callable[..., T]:
    def replaced(obj: T, *new: Any) -> T:
        if len(new) != len(at):
            raise TypeError(f"expected {len(at)} values, got {len(new)}")
        current = list(values(obj))
        for index, value in zip(at, new, strict=True):
            current[index] = value
        return make(*current)

    return replaced
