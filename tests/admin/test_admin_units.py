"""The admin package's pure parts: request specs, the OpenAPI renderer, bulk
planning on a snapshot, the user search, templates and the CLI's formatting."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentry.admin.actions import ActionOptions, plan_bulk
from sentry.admin.cli_format import cell, page_footer, record, table
from sentry.admin.context import iso
from sentry.admin.errors import BadRequest, Conflict, NotFound, from_policy
from sentry.admin.listing import Query, matching, predicate
from sentry.admin.openapi import openapi_document
from sentry.admin.push import template_problem
from sentry.admin.schema import (
    Call,
    Field,
    Route,
    parse_body,
    parse_path,
    parse_query,
)
from sentry.model import (
    Association,
    AssociationKey,
    Realm,
    Realms,
    Reason,
    User,
    Verdict,
    WipeStatus,
)
from sentry.policy import NotFoundError, Snapshot, TransitionError, ValidationError
from sentry.store.base import AssociationFilter, AssociationState


def problems(spec: dict[str, Field], data: Any) -> dict[str, str]:
    with pytest.raises(BadRequest) as caught:
        parse_body(data, spec)
    return caught.value.fields


def test_body_fields_are_checked_one_by_one() -> None:
    spec = {
        "name": Field("string", required=True, blank=False, max_length=5),
        "on": Field("boolean"),
        "n": Field("integer", minimum=1, maximum=3, nullable=True),
        "tags": Field("strings"),
        "kind": Field("string", choices=("a", "b")),
        "sub": Field("object", fields={"x": Field("integer", required=True)}),
    }
    ok = {"name": "abc", "on": False, "n": None, "tags": ["t"], "kind": "a", "sub": {"x": 1}}
    assert parse_body(ok, spec) == ok
    assert problems(spec, {"name": "toolong", "on": 1, "n": True, "tags": "t", "x": 0}) == {
        "name": "must be at most 5 characters",
        "on": "must be true or false",
        "n": "must be an integer",
        "tags": "must be a list of strings",
        "x": "unknown field",
    }
    assert problems(spec, {"name": " ", "n": 4, "kind": "c", "sub": {"y": 1}}) == {
        "name": "must not be blank",
        "n": "must be at most 3",
        "kind": "must be one of: a, b",
        "sub.x": "required",
        "sub.y": "unknown field",
    }
    assert problems(spec, {"name": None, "sub": []}) == {
        "name": "must not be null",
        "sub": "must be an object",
    }
    assert problems(spec, "text") == {"body": "must be a JSON object"}


def test_query_strings_become_typed_values() -> None:
    spec = {"on": Field("boolean"), "n": Field("integer", minimum=0), "s": Field("string")}
    assert parse_query({"on": "Yes", "n": "3", "s": "x"}, spec) == {"on": True, "n": 3, "s": "x"}
    assert parse_query({"on": "0"}, spec) == {"on": False}
    with pytest.raises(BadRequest) as caught:
        parse_query({"on": "perhaps", "n": "-1", "z": "1"}, spec)
    assert caught.value.fields == {
        "on": "must be true or false",
        "n": "must be at least 0",
        "z": "unknown query parameter",
    }


def test_path_choices_are_resources() -> None:
    spec = {"action": Field("string", choices=("allow",))}
    assert parse_path({"action": "allow", "id": "7"}, spec) == {"action": "allow", "id": "7"}
    with pytest.raises(NotFound):
        parse_path({"action": "nuke"}, spec)


async def _nothing(call: Call) -> None:
    return None


def test_openapi_renders_routes_fields_and_errors() -> None:
    route = Route(
        "POST",
        "/api/things/{id}/{verb}",
        _nothing,
        "do a thing",
        "things",
        query={"q": Field("string")},
        body={"note": Field("string", required=True, blank=False)},
        path_fields={"verb": Field("string", choices=("go",))},
        conflict=True,
        status=201,
        response="Thing",
    )
    doc = openapi_document([route], {"Thing": {"type": "object"}}, title="t", version="1")
    op = doc["paths"]["/api/things/{id}/{verb}"]["post"]
    assert op["operationId"] == "nothing"
    assert [(p["name"], p["in"]) for p in op["parameters"]] == [
        ("id", "path"),
        ("verb", "path"),
        ("q", "query"),
    ]
    assert op["parameters"][1]["schema"]["enum"] == ["go"]
    body = op["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["note"] and body["additionalProperties"] is False
    assert body["properties"]["note"]["minLength"] == 1
    assert sorted(op["responses"]) == ["201", "400", "401", "403", "404", "409"]
    assert op["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Thing"
    }
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_policy_errors_map_to_statuses() -> None:
    assert isinstance(from_policy(TransitionError("no", "wiped", "allow")), Conflict)
    assert isinstance(from_policy(NotFoundError("gone")), NotFound)
    assert isinstance(from_policy(ValidationError("bad")), BadRequest)
    assert Conflict("x", {"a": "b"}).body() == {"error": "x", "fields": {"a": "b"}}


def test_templates_name_the_unknown_variable() -> None:
    assert template_problem("$USERID$@corp.example") is None
    assert template_problem("$user_custom4$ and $Email$") is None
    problem = template_problem("$USER_CUSTOM1$ $CUSTOM9$")
    assert problem is not None and problem.startswith("unknown variable $CUSTOM9$")
    assert template_problem("costs $5") is None  # not a variable


def rows(*specs: tuple[str, str, str | None, bool]) -> Snapshot:
    return Snapshot.build(
        associations=[
            Association(AssociationKey(d, u), policy_fingerprint=fp, ambiguous_policy=flag)
            for d, u, fp, flag in specs
        ]
    )


def test_user_search_matches_a_part_of_the_principal_or_the_principal_it_names() -> None:
    realms = Realms((Realm("corp.example", netbios=frozenset({"corp"})),), "corp.example")
    snap = Snapshot.build(
        realms=realms,
        users=[User("bob@corp.example", email="robert@other.example")],
        associations=[
            Association(AssociationKey(d, u))
            for d, u in (
                ("D1", "alice@corp.example"),
                ("D2", "alicia@corp.example"),
                ("D1", "bob@corp.example"),
            )
        ],
    )

    def found(**values: Any) -> list[tuple[str, str]]:
        query = Query.of(values, snap)
        return [(r.key.device_id, r.key.user) for r in matching(snap, query)]

    alice, alicia = ("D1", "alice@corp.example"), ("D2", "alicia@corp.example")
    bob = ("D1", "bob@corp.example")
    assert found(user="ALI") == [alice, alicia]
    assert found(user="CORP\\bob") == [bob]  # the one rule under the realms
    assert found(user="robert@other.example") == [bob]  # bob's email: a known name
    assert found(user="alice@corp.example", device_id="d1") == [alice]
    assert found(device_id="d1") == [alice, bob]
    assert found(user="  ") == found()  # blank means any
    assert Query.of({"user": "Bob", "linked": False}).describe() == {"user": "bob", "linked": False}


def _maybe(values: Any) -> Any:
    return st.none() | st.sampled_from(values)


ROWS = st.builds(
    Association,
    key=st.builds(AssociationKey, st.sampled_from(["D1", "D2"]), st.sampled_from(["a", "b"])),
    device_type=st.sampled_from(["iPhone", "Android"]),
    verdict=st.sampled_from(list(Verdict)),
    wipe=st.sampled_from(list(WipeStatus)),
    reasons=st.frozensets(st.sampled_from(list(Reason)), max_size=3),
    device=_maybe(["m1"]),
    pool=_maybe(["p1", "p2"]),
    last_seen=st.sampled_from([0.0, 5.0]),
)
FILTERS = st.builds(
    AssociationFilter,
    user=_maybe(["a", "b"]),
    device_id=_maybe(["d1", "D2"]),
    device_type=_maybe(["iPhone", "Android"]),
    state=_maybe(list(AssociationState)),
    reason=_maybe(list(Reason)),
    linked=_maybe([True, False]),
    pool=_maybe(["p1", "p2"]),
    never_seen=_maybe([True, False]),
)


@given(ROWS, FILTERS)
def test_the_fast_predicate_is_the_store_filter(row: Association, f: AssociationFilter) -> None:
    assert predicate(f)(row) == f.matches(row)


def test_bulk_plan_applies_rows_one_after_another() -> None:
    # Three policies on one device; removing two re-flags the rest each time. Built
    # against a scratch copy, the second Remove sees the first: nothing comes back.
    snap = rows(("D", "a", "f1", False), ("D", "b", "f2", False), ("D", "c", "f3", False))
    keys = [AssociationKey("D", "a"), AssociationKey("D", "b")]
    opts = ActionOptions("remove", "cleanup", "admin")
    plan = plan_bulk(snap, keys, opts, 1000.0, {"device_id": "D"})
    assert plan.changed == keys and plan.skipped == []
    after = snap.copy()
    after.apply(plan.changes)
    assert [(r.key.user, r.ambiguous_policy) for r in after.on_device("D")] == [("c", False)]
    assert len(snap) == 3  # planning changed nothing


def test_formatting_for_people() -> None:
    assert [cell(v) for v in (None, [], True, False, ["a", "b"], {"k": 1}, 3)] == [
        "-",
        "-",
        "yes",
        "no",
        "a,b",
        "k=1",
        "3",
    ]
    columns = [("A", lambda r: r["a"]), ("LONG NAME", lambda r: r["b"])]
    assert table([{"a": "xyz", "b": None}], columns) == "A    LONG NAME\nxyz  -"
    text = record({"id": "d", "override": {"kind": "block"}, "history": [{"kind": "x", "n": 1}]})
    assert text == "id: d\noverride:\n  kind: block\nhistory:\n  - kind: x\n    n: 1"
    assert page_footer({"items": [1, 2], "offset": 10, "total": 50}) == "rows 11-12 of 50"
    assert page_footer({"items": [], "offset": 0, "total": 0}) == "no rows (total 0)"
    assert iso(0.0) == "1970-01-01T00:00:00.000Z" and iso(None) is None
