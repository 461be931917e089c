"""MS-ASWBXML code pages 0-25 as data.

Each page is a namespace (the spec names of EAS 16.1) with its tag tokens
(0x05-0x3F). Tokens carry the protocol version that introduced them where known,
and tokens that the current spec no longer lists but older clients still send
are kept with ``legacy=True``: the decoder accepts them, the encoder writes them
only when asked for them by name.

Sources (facts, not code): MS-ASWBXML 2.1.2.1.1-2.1.2.1.26; the Microsoft
protocol test suite's token tables; Z-Push/grommunio-sync ``wbxmldefs.php``
"since" notes and legacy tokens; see ``docs`` in the project's shared folder.
"""

from __future__ import annotations

from collections.abc import Mapping

from ._codepage_types import CodePage, Token
from ._pages_0_12 import PAGES_0_12
from ._pages_13_25 import PAGES_13_25

__all__ = ["PAGES", "PAGE_BY_NAMESPACE", "CodePage", "Token", "lookup"]

# The tables live in two data modules (pages 0-12, 13-25) to keep files readable.
PAGES: tuple[CodePage, ...] = PAGES_0_12 + PAGES_13_25
assert [p.number for p in PAGES] == list(range(len(PAGES))), "pages out of order"

PAGE_BY_NAMESPACE: Mapping[str, CodePage] = {p.namespace: p for p in PAGES}


def lookup(namespace: str, name: str) -> tuple[CodePage, Token] | None:
    """The page and token for ``namespace:name``, or None when unknown."""
    page = PAGE_BY_NAMESPACE.get(namespace)
    if page is None:
        return None
    token = page.by_name.get(name)
    return None if token is None else (page, token)
