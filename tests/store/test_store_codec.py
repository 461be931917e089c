"""The store's JSON encoders: the shortcut for already JSON-ready documents
(``codec._json_ready``) gives exactly the text of the general path,
``json.dumps(plain(value))``, and the set encoder's cache keeps sets apart."""

from __future__ import annotations

import enum
import json
from typing import Any

import pytest

from sentry.model import Reason, Verdict
from sentry.policy.audit import plain
from sentry.store.codec import compact, dumps, encode_set


class Colour(enum.Enum):  # not a str: json cannot encode it, plain can
    RED = "red"


DOCUMENTS: list[Any] = [
    {"b": 1, "a": [1, "x", None, 1.5, True], "c": None},  # the shortcut
    {"verdict": Verdict.REFUSE, "reasons": [Reason.MANUAL]},  # StrEnums: plain's values
    {True: 1, None: 2, 3: "x"},  # keys plain turns into "True", "None", "3"
    {"a": [Colour.RED]},
    {"a": Colour.RED},
    {"a": (1, 2), "b": {"c": [1]}},  # a tuple, a nested dict
    {"a": frozenset({"y", "x"})},
    {"a": [[1]]},  # a list in a list
    [1, 2],
    "text",
]


@pytest.mark.parametrize("value", DOCUMENTS)
def test_encoders_give_the_general_paths_text(value: Any) -> None:
    assert dumps(value) == json.dumps(plain(value), separators=(",", ":"), sort_keys=True)
    assert compact(value) == json.dumps(plain(value), separators=(",", ":"))


def test_a_json_ready_dict_is_written_in_its_key_order_by_compact() -> None:
    assert compact({"b": 1, "a": [2]}) == '{"b":1,"a":[2]}'
    assert dumps({"b": 1, "a": [2]}) == '{"a":[2],"b":1}'


def test_encoded_sets_are_sorted_and_kept_apart() -> None:
    assert encode_set(frozenset()) is None
    both = frozenset({Reason.MANUAL, Reason.AUTO_BLOCK})
    assert encode_set(both) == json.dumps(sorted(r.value for r in both), separators=(",", ":"))
    assert encode_set(frozenset({Reason.MANUAL})) == '["MANUAL"]'
    assert encode_set(frozenset({"os_version"})) == '["os_version"]'
    assert encode_set(both) == encode_set(frozenset(both))  # cached: the same text again
