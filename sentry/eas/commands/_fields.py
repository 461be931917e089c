"""Small readers shared by the command parsers: root checks, integers, strings.

Every reader raises ``BodyError`` (HTTP 400 / EAS 103 InvalidXML) for a value
the schema does not allow, so a command parser is a list of field reads.
"""

from __future__ import annotations

import re

from sentry.eas.errors import BodyError
from sentry.eas.wbxml import Element

__all__ = ["MAX_STRING", "bounded_text", "expect_root", "int_child"]

MAX_STRING = 1024  # DeviceInformationStringType (MS-ASCMD 6.38)
_UNSIGNED = re.compile(r"[0-9]{1,10}", re.ASCII)


def expect_root(root: Element, namespace: str, tag: str) -> None:
    """Raise ``BodyError`` unless ``root`` is ``namespace:tag``."""
    if (root.namespace, root.tag) != (namespace, tag):
        raise BodyError(f"expected a {namespace}:{tag} body, got {root.namespace}:{root.tag}")


def int_child(parent: Element | None, tag: str, namespace: str) -> int | None:
    """The unsigned decimal integer in child ``tag``; None when there is no child."""
    child = None if parent is None else parent.find(tag, namespace)
    if child is None:
        return None
    text = (child.text or "").strip()
    if not _UNSIGNED.fullmatch(text):
        raise BodyError(f"{namespace}:{tag} {text[:20]!r} is not an unsigned integer")
    return int(text)


def bounded_text(parent: Element, tag: str, namespace: str, limit: int = MAX_STRING) -> str | None:
    """The text of child ``tag`` (None when absent or empty), at most ``limit`` chars."""
    text = parent.child_text(tag, namespace)
    if text is not None and len(text) > limit:
        raise BodyError(f"{namespace}:{tag} is {len(text)} chars, over the limit of {limit}")
    return text or None
