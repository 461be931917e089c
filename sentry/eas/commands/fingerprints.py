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
the usual shape: a Provision root whose path to the Data is Provision-page
elements; what comes before each of them (DeviceInformation's status, Status,
PolicyType, PolicyKey) well-formed elements of known tokens, inline strings
and page switches, nested at most four deep, and none named like the path's
next element (``find`` would take it). ``AnswerFingerprints.of`` computes the
fingerprint in full the first time it meets a key and remembers it; another
answer with the same key decodes to the same ``Data`` element in the same
place (the same bytes, decoded in the same state: code page, the same three
open elements, a prefix ``decode`` accepts), so its fingerprint is the one
remembered. Everything else (no key, a body over ``MEMO_BODY_LIMIT``, a key
not yet seen) takes the full path, errors included. The memory is bounded
(``size`` keys, cleared when full).
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
answer this small can reach (size, elements, one string; the depth of the
deepest sibling taken), so the prefix that differs cannot push one answer
over a limit the remembered one was under."""

_PROVISION_PAGE = 14
_ROOT, _POLICIES, _POLICY, _DATA = 0x05, 0x06, 0x07, 0x0A
_PATH = (_ROOT, _POLICIES, _POLICY, _DATA)  # the element to enter at each depth
_PREFIX_TOKENS = 64  # an answer with more before its Data takes the full path
_SIBLING_DEPTH = 4  # a sibling nested deeper takes the full path


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
    inside = 0  # how deep into a sibling before the path's next element
    for _ in range(_PREFIX_TOKENS):
        if pos >= end:
            return None
        b = body[pos]
        if b == SWITCH_PAGE:
            if pos + 1 >= end or body[pos + 1] >= len(_NAMES):
                return None
            page = body[pos + 1]
            pos += 2
            continue
        if inside and b == END:
            inside -= 1
            pos += 1
            continue
        if inside and b == STR_I:
            stop = body.find(0, pos + 1)
            if stop < 0:
                return None
            try:
                body[pos + 1 : stop].decode()
            except UnicodeDecodeError:
                return None
            pos = stop + 1
            continue
        token = b & 0x3F
        if b >= 0x80 or token <= 0x04 or _NAMES[page][token] is None:
            return None  # opaque data, a global token, a token no page defines; at the
            # path's level also a string or the END of a container without the Data
        pos += 1
        if inside:
            inside += bool(b & CONTENT_BIT)
            if inside > _SIBLING_DEPTH:
                return None
            continue
        want = _PATH[depth]
        if page == _PROVISION_PAGE and token == want:
            if not b & CONTENT_BIT:
                return None  # empty: there is no Data under it (decode says so)
            if depth == 3:
                return page, body[pos - 1 :]
            depth += 1
            continue
        if depth == 0 or _NAMES[page][token] == _NAMES[_PROVISION_PAGE][want]:
            return None  # not a Provision answer; or a sibling that find() would take
        inside = int(bool(b & CONTENT_BIT))
    return None


class AnswerFingerprints:
    """``policy_fingerprint(decode(body, limits))``, remembered (module comment)."""

    def __init__(self, limits: Limits, size: int = 64) -> None:
        self.limits = limits
        self._size = size
        self._known: dict[tuple[int, bytes], str | None] = {}
        self._memo = (
            min(limits.max_size, limits.max_elements, limits.max_string) >= MEMO_BODY_LIMIT
            and limits.max_depth >= 3 + _SIBLING_DEPTH + 1
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
