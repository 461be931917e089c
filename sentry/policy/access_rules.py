"""Device access rules (Exchange's ABQ rules): checking, matching, admin writes.

Approach. A rule looks at ONE thing the device said about itself (its
DeviceType, the DeviceInformation model or OS, its User-Agent, or the EAS
protocol version it speaks) and, when that matches, gives the association
an access level: allow, block or quarantine. The rules are an ordered list
(``AccessRules``, one configuration value); the first rule that matches
decides, the rest are not looked at. Where a rule sits in the decision
table is ``rules.py``'s business: after the hard refusals and the admin's
own Allow/Block for the association (the personal exemption), before
compliance, auto-block and the limits.

What a device sends can be missing, wrong or huge, so matching is bounded
and total:

- a rule on a field the device has not sent (no DeviceInformation yet, no
  User-Agent, a version that is not ``major.minor``) does not match;
- text is compared case-insensitively (``str.casefold``) on at most
  ``MAX_SUBJECT`` characters of the device's value; ``equals`` and
  ``prefix`` are plain string operations and ``glob`` (``*`` any run, ``?``
  one character, nothing else special) is matched segment by segment with
  quantifier-free expressions, leftmost first: linear-time searches, no
  backtracking an input could make catastrophic;
- versions are compared as ``(major, minor)`` integers.

A rule that cannot work (unknown field, a version operator on text, a
pattern too long, blank or with control characters, a version value that is
not ``major.minor``) is refused when it is created (``check_rule``:
``ValidationError``, a 400), never at decision time; the admin writes are
in ``access_admin``. The snapshot keeps a
``RuleSet``: the compiled rules and a bounded memo from a device's facts to
the first matching rule (devices of one model and version share one entry),
so the request path pays one dict probe per request.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Protocol

from sentry.model import (
    AccessRule,
    AccessRules,
    DeviceInformation,
    RuleField,
    RuleMatch,
)

from .errors import ValidationError

__all__ = [
    "CONTROL_CHARACTERS",
    "MAX_PATTERN",
    "MAX_SUBJECT",
    "NAME_PATTERN",
    "TEXT_MATCHES",
    "VERSION_MATCHES",
    "VERSION_PATTERN",
    "Facts",
    "RuleSet",
    "check_rule",
    "compile_rule",
    "facts_of",
    "parse_version",
]

MAX_PATTERN = 128
"""The longest rule value (characters)."""
MAX_SUBJECT = 256
"""How much of a device's value is compared (characters; the rest is ignored)."""
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
"""A rule's name: 1 to 64 letters, digits, ``.``, ``_`` or ``-``, not starting with a sign."""
_NAME = re.compile(NAME_PATTERN)
TEXT_MATCHES = frozenset({RuleMatch.EQUALS, RuleMatch.PREFIX, RuleMatch.GLOB})
VERSION_MATCHES = frozenset(
    {RuleMatch.EQUALS, RuleMatch.LT, RuleMatch.LE, RuleMatch.GT, RuleMatch.GE}
)
VERSION_PATTERN = r"^[0-9]{1,4}\.[0-9]{1,4}$"
"""A rule's version value: ``major.minor``."""
_VERSION = re.compile(r"([0-9]{1,4})\.([0-9]{1,4})")
CONTROL_CHARACTERS = "\\u0000-\\u001f\\u007f-\\u009f"
"""Control characters, as the inside of a character class (ECMA and Python alike)."""
_CONTROL = re.compile(f"[{CONTROL_CHARACTERS}]")

Facts = tuple[str | None, str | None, str | None, str | None, str | None]
"""(DeviceType, model, OS, User-Agent, protocol version) of one device."""
_FIELD_INDEX = {
    RuleField.DEVICE_TYPE: 0,
    RuleField.MODEL: 1,
    RuleField.OS: 2,
    RuleField.USER_AGENT: 3,
    RuleField.PROTOCOL_VERSION: 4,
}


def parse_version(text: str | None) -> tuple[int, int] | None:
    """``"14.1"`` as ``(14, 1)``; None for anything that is not ``major.minor``."""
    if text is None:
        return None
    m = _VERSION.fullmatch(text.strip())
    return None if m is None else (int(m[1]), int(m[2]))


# --- Checking ---


def check_rule(rule: AccessRule) -> AccessRule:
    """``rule`` if it can work (its name and value are taken as given);
    ``ValidationError`` naming what cannot."""
    name, value = rule.name, rule.value
    if not _NAME.fullmatch(name):
        raise ValidationError(
            f"rule name {name[:80]!r}: 1 to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if not value.strip() or len(value) > MAX_PATTERN or _CONTROL.search(value):
        raise ValidationError(
            f"rule value: 1 to {MAX_PATTERN} characters, not blank, without control characters"
        )
    if rule.field is RuleField.PROTOCOL_VERSION:
        if rule.match not in VERSION_MATCHES:
            raise ValidationError(
                f"match {rule.match.value!r} does not compare versions "
                f"(one of: {', '.join(sorted(m.value for m in VERSION_MATCHES))})"
            )
        if not _VERSION.fullmatch(value):
            raise ValidationError(f"rule value {value[:80]!r} is not a version 'major.minor'")
    elif rule.match not in TEXT_MATCHES:
        raise ValidationError(
            f"match {rule.match.value!r} compares versions: field "
            f"{rule.field.value!r} is text (one of: equals, glob, prefix)"
        )
    return rule


# --- Matching ---

Matcher = Callable[[str], bool]


def compile_rule(rule: AccessRule) -> Callable[[Facts], bool]:
    """A predicate over a device's facts (the rule was checked by ``check_rule``)."""
    index = _FIELD_INDEX[rule.field]
    if rule.field is RuleField.PROTOCOL_VERSION:
        test = _version_test(rule.match, parse_version(rule.value) or (0, 0))

        def version(facts: Facts) -> bool:
            found = parse_version(facts[index])
            return found is not None and test(found)

        return version
    matcher = _text_matcher(rule.match, rule.value.casefold())

    def text(facts: Facts) -> bool:
        found = facts[index]
        return bool(found) and matcher(found[:MAX_SUBJECT].casefold())  # type: ignore[index]

    return text


def _version_test(match: RuleMatch, v: tuple[int, int]) -> Callable[[tuple[int, int]], bool]:
    tests: dict[RuleMatch, Callable[[tuple[int, int]], bool]] = {
        RuleMatch.EQUALS: lambda x: x == v,
        RuleMatch.LT: lambda x: x < v,
        RuleMatch.LE: lambda x: x <= v,
        RuleMatch.GT: lambda x: x > v,
        RuleMatch.GE: lambda x: x >= v,
    }
    return tests[match]


def _text_matcher(match: RuleMatch, pattern: str) -> Matcher:
    if match is RuleMatch.EQUALS:
        return pattern.__eq__
    if match is RuleMatch.PREFIX:
        return lambda s: s.startswith(pattern)
    return _glob(pattern)


def _segment(part: str) -> re.Pattern[str]:
    """A glob segment without ``*``: literals, ``?`` any one character (no quantifier)."""
    return re.compile("".join("." if c == "?" else re.escape(c) for c in part), re.DOTALL)


def _glob(pattern: str) -> Matcher:
    """``*``/``?`` matching: the first segment anchored at the start, the last
    at the end, the middle ones found leftmost first in between (which finds
    a match whenever one exists)."""
    parts = pattern.split("*")
    if len(parts) == 1:
        whole = _segment(pattern)
        return lambda s: whole.fullmatch(s) is not None
    first, last = _segment(parts[0]), _segment(parts[-1])
    middle = [_segment(p) for p in parts[1:-1] if p]
    head, tail = len(parts[0]), len(parts[-1])
    need = head + tail + sum(len(p) for p in parts[1:-1])

    def match(s: str) -> bool:
        end = len(s) - tail
        if len(s) < need or first.match(s) is None or last.fullmatch(s, end) is None:
            return False
        pos = head
        for seg in middle:
            found = seg.search(s, pos, end)
            if found is None:
                return False
            pos = found.end()
        return True

    return match


class _Row(Protocol):
    @property
    def device_type(self) -> str: ...
    @property
    def user_agent(self) -> str | None: ...
    @property
    def protocol_version(self) -> str | None: ...
    @property
    def device_info(self) -> DeviceInformation | None: ...


def facts_of(row: _Row) -> Facts:
    """What the rules look at in a row (None: the device did not say), each
    value cut to ``MAX_SUBJECT`` characters (so a memo entry stays small)."""
    info = row.device_info
    kind, agent, version = row.device_type or None, row.user_agent, row.protocol_version
    model = os = None
    if info is not None:
        model, os, agent = info.model, info.os, agent or info.user_agent
    m = MAX_SUBJECT
    if (
        len(kind or "") > m
        or len(agent or "") > m
        or len(version or "") > m
        or len(model or "") > m
        or len(os or "") > m
    ):
        return (_cut(kind), _cut(model), _cut(os), _cut(agent), _cut(version))
    return (kind, model, os, agent, version)  # the usual case: nothing to cut


def _cut(text: str | None) -> str | None:
    return None if text is None else text[:MAX_SUBJECT]


_MEMO_LIMIT = 8192


class RuleSet:
    """Compiled rules and a bounded memo: facts -> the first matching rule."""

    __slots__ = ("_memo", "_tests", "rules")

    def __init__(self, rules: AccessRules) -> None:
        self.rules = rules
        self._tests = [(compile_rule(r), r) for r in rules.rules]
        self._memo: dict[Facts, AccessRule | None] = {}

    def first(self, facts: Facts) -> AccessRule | None:
        """The first rule that matches ``facts``, or None."""
        memo = self._memo
        if facts in memo:
            return memo[facts]
        found = next((rule for test, rule in self._tests if test(facts)), None)
        if len(memo) >= _MEMO_LIMIT:
            memo.clear()  # a bounded memo: many distinct devices only cost matching again
        memo[facts] = found
        return found
