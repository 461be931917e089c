"""The types of the code-page tables (``sentry.eas.codepages`` is the public face)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["CodePage", "Token", "page"]


@dataclass(frozen=True, slots=True)
class Token:
    """One tag of a code page: its 6-bit value and spec name."""

    value: int
    name: str
    since: str | None = None  # protocol version that introduced it, e.g. "16.0"
    legacy: bool = False  # absent from the current spec; tolerated when decoding


@dataclass(frozen=True)
class CodePage:
    """A WBXML code page: number, namespace and its tokens."""

    number: int
    namespace: str
    since: str | None
    tokens: tuple[Token, ...]
    by_value: Mapping[int, Token] = field(init=False, repr=False, compare=False)
    by_name: Mapping[str, Token] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_value", {t.value: t for t in self.tokens})
        object.__setattr__(self, "by_name", {t.name: t for t in self.tokens})


def page(number: int, namespace: str, since: str | None, *tokens: Token) -> CodePage:
    return CodePage(number, namespace, since, tokens)
