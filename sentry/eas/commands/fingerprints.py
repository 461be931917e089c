"""Policy fingerprints of Provision *answers*, remembered by the policy's own bytes.

Why. The gateway names the policy each backend gives an association
(``policy_fingerprint``: SHA-256 of the canonical encoding of
``Policies/Policy/Data``) to flag devices whose mailboxes got different ones.
That is a whole decode of the answer, an encode of the policy document and a
hash, on every Provision answer: 5-6 % of the gateway's CPU in the bench's
mix, where one request in seven is a Provision (``bench/README.md``). A
backend sends the same policy document over and over; only the part of the
answer before it differs (the temporary ``PolicyKey`` is new every time).

Approach. ``data_key`` walks the answer's first few tokens without building
anything, the way ``decode`` would read them, and returns the bytes from the
start tag of the first ``Provision/Policies/Policy/Data`` to the end of the
body, with the code page in force there. It gives up (None) on anything but
the usual shape: a Provision root, then only Provision-page elements, the
ones before the path's next element each a leaf with one inline string or
none. ``AnswerFingerprints.of`` computes the fingerprint in full the first
time it meets a key and remembers it; another answer with the same key
decodes to the same ``Data`` element in the same place (the same bytes,
decoded in the same state: code page, the same three open elements, a prefix
``decode`` accepts), so its fingerprint is the one remembered. Everything
else (no key, a body over ``MEMO_BODY_LIMIT``, a key not yet seen) takes the
full path, errors included. The memory is bounded (``size`` keys, cleared
when full).
"""

from __future__ import annotations

from sentry.eas.errors import WbxmlError
from sentry.eas.wbxml import (
    _NAMES,
    CONTENT_BIT,
    END,
    STR_I,
    SWITCH_PAGE,
    Limits,
    _read_header,
    decode,
)

from .provision import policy_fingerprint

__all__ = ["MEMO_BODY_LIMIT", "AnswerFingerprints", "data_key"]

MEMO_BODY_LIMIT = 16 * 1024
"""Answers up to this size are remembered, and only under ``Limits`` that no
answer this small can reach (size, elements, one string; depth 4 for a leaf
beside the Data), so the prefix that differs cannot push one answer over a
limit the remembered one was under."""

_PROVISION_PAGE = 14
_ROOT, _POLICIES, _POLICY, _DATA = 0x05, 0x06, 0x07, 0x0A
_PATH = (_ROOT, _POLICIES, _POLICY, _DATA)  # the element to enter at each depth
_PREFIX_TOKENS = 64  # an answer with more before its Data takes the full path


def data_key(body: bytes) -> tuple[int, bytes] | None:
    """(code page, the bytes from the first Policies/Policy/Data's start tag
    to the end) when the answer has the usual shape (module comment), else None."""
    try:
        pos = _read_header(body)
    except WbxmlError:
        return None
    end = len(body)
    page = 0
    depth = 0  # how many of Provision, Policies, Policy are open
    for _ in range(_PREFIX_TOKENS):
        if pos >= end:
            return None
        b = body[pos]
        if b == SWITCH_PAGE:
            if pos + 1 >= end:
                return None
            page = body[pos + 1]
            pos += 2
            continue
        token = b & 0x3F
        if page != _PROVISION_PAGE or b >= 0x80 or token <= 0x04:
            return None  # END, a string, opaque data or another page before the Data
        if _NAMES[_PROVISION_PAGE][token] is None:
            return None  # a token no page defines: Limits decide, so decode does
        if token == _PATH[depth]:
            if not b & CONTENT_BIT:
                return None  # empty: there is no Data under it (decode says so)
            if depth == 3:
                return page, body[pos:]
            depth += 1
            pos += 1
            continue
        if depth == 0:
            return None  # the root is not Provision
        pos += 1  # a sibling before the path's next element: a leaf, or give up
        if not b & CONTENT_BIT:
            continue
        if pos >= end or body[pos] != STR_I:
            return None
        stop = body.find(0, pos + 1)
        if stop < 0 or stop + 1 >= end or body[stop + 1] != END:
            return None
        try:
            body[pos + 1 : stop].decode()
        except UnicodeDecodeError:
            return None
        pos = stop + 2
    return None


class AnswerFingerprints:
    """``policy_fingerprint(decode(body, limits))``, remembered (module comment)."""

    def __init__(self, limits: Limits, size: int = 64) -> None:
        self.limits = limits
        self._size = size
        self._known: dict[tuple[int, bytes], str | None] = {}
        self._memo = (
            min(limits.max_size, limits.max_elements, limits.max_string) >= MEMO_BODY_LIMIT
            and limits.max_depth >= 4
        )
        self.hits = 0

    def of(self, body: bytes) -> str | None:
        """The fingerprint of a Provision answer (EasError when it does not decode)."""
        key = data_key(body) if self._memo and len(body) <= MEMO_BODY_LIMIT else None
        if key is not None and key in self._known:
            self.hits += 1
            return self._known[key]
        fingerprint = policy_fingerprint(decode(body, self.limits))
        if key is not None:
            if len(self._known) >= self._size:
                self._known.clear()
            self._known[key] = fingerprint
        return fingerprint
