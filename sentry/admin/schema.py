"""One route table: request validation and the OpenAPI document from the same data.

Approach. Every admin route is a ``Route`` value: method, path, handler, and
``Field`` specs for its path parameters, query parameters and JSON body. The
API registers exactly these routes, checks every request against their specs
before the handler runs (``parse_body``/``parse_query``/``parse_path``: each
problem is reported per field, ``{"note": "required"}``, and unknown fields
are errors), and ``openapi_document`` (``sentry.admin.openapi``) renders the
same specs as OpenAPI 3.
So the document cannot drift from what is served, and a test checks that the
served routes and the documented ones are the same set.

Every limit a check applies is one the document states, in a form a client
(or a fuzzer such as schemathesis) can read: integers always carry a minimum
and a maximum (at most the 64-bit range the store keeps), strings a maximum
length, "not blank" is the ``pattern`` ``NOT_BLANK`` (the same character class
is used for the check, so the two cannot disagree), and text must be valid
Unicode (a lone surrogate, possible through a JSON ``\ud800`` escape, is
refused: it cannot be stored) without U+0000 (PostgreSQL's ``text`` cannot
hold it, so no store accepts it).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from .context import AdminContext
from .errors import BadRequest, NotFound

__all__ = [
    "ADD_OR_REMOVE",
    "BLANK",
    "EMPTY",
    "INT_MAX",
    "INT_MIN",
    "NOT_BLANK",
    "PATH_FIELD",
    "WHITESPACE",
    "Call",
    "Field",
    "Fields",
    "Handler",
    "Route",
    "object_schema",
    "parse_body",
    "parse_path",
    "parse_query",
]

Kind = Literal["string", "boolean", "integer", "strings", "object"]
_JSON_TYPES = {"string": "string", "boolean": "boolean", "integer": "integer"}
_TRUE, _FALSE = frozenset({"true", "1", "yes", "on"}), frozenset({"false", "0", "no", "off"})
_PATH_PARAM = re.compile(r"\{(\w+)\}")
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
"""The integers the API takes: what SQLite stores (64-bit signed)."""
WHITESPACE = (
    "\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a"
    "\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff\\u001c-\\u001f"
)
"""White space as the inside of a character class (ECMA and Python alike)."""
NOT_BLANK = f"[^{WHITESPACE}]"
"""A regular expression (ECMA and Python alike) found in every non-blank string."""
BLANK = f"^[{WHITESPACE}]*$"
"""A regular expression matching the blank strings (empty or only white space)."""
_NOT_BLANK = re.compile(NOT_BLANK)
_INTEGER_TEXT = re.compile(r"-?[0-9]{1,19}")


@dataclass(frozen=True, slots=True)
class Field:
    """One value of a request: its JSON kind and what it may hold."""

    kind: Kind
    doc: str = ""
    required: bool = False
    nullable: bool = False
    blank: bool = True  # strings: may be empty or whitespace
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    max_length: int = 1024
    fields: Mapping[str, Field] | None = None  # kind "object": its fields
    free_form: bool = False  # kind "object": any names, integer or boolean values, which
    # the handler checks (documented in ``doc``)
    pattern: str | None = None  # strings: a regular expression found in the value
    formats: tuple[str, ...] = ()  # strings: documented formats, one of which the handler
    # checks (e.g. "date", "date-time")
    mismatch: str | Callable[[str], str] = "has the wrong form"  # when it is not

    def __post_init__(self) -> None:
        if self.pattern is not None and not self.blank:
            raise ValueError("a pattern must say itself that the value is not blank")

    @property
    def low(self) -> int:
        """The smallest integer allowed."""
        return INT_MIN if self.minimum is None else self.minimum

    @property
    def high(self) -> int:
        """The largest integer allowed."""
        return INT_MAX if self.maximum is None else self.maximum

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` (None: nothing)."""
        if value is None:
            return None if self.nullable else "must not be null"
        check = _CHECKS[self.kind]
        return check(self, value)

    def schema(self) -> dict[str, Any]:
        """This field as an OpenAPI 3.0 schema."""
        if self.kind == "object" and self.free_form:
            scalar = {"anyOf": [{"type": "integer"}, {"type": "boolean"}]}
            out = {"type": "object", "additionalProperties": scalar}
        elif self.kind == "object":
            out = object_schema(self.fields or {})
        elif self.kind == "strings":
            items: dict[str, Any] = {"type": "string", "maxLength": self.max_length}
            if self.choices:
                items["enum"] = list(self.choices)
            else:
                items |= {"minLength": 1, "pattern": NOT_BLANK}
            out = {"type": "array", "items": items}
        else:
            out = {"type": _JSON_TYPES[self.kind]}
        _limits(self, out)
        return out


Fields = Mapping[str, Field]
EMPTY: Fields = MappingProxyType({})


def object_schema(spec: Fields) -> dict[str, Any]:
    """A JSON object schema for ``spec`` (no additional properties)."""
    out: dict[str, Any] = {
        "type": "object",
        "properties": {name: f.schema() for name, f in spec.items()},
        "additionalProperties": False,
    }
    required = [name for name, f in spec.items() if f.required]
    if required:
        out["required"] = required
    return out


def _limits(f: Field, out: dict[str, Any]) -> None:
    if f.doc:
        out["description"] = f.doc
    if f.nullable:
        out["nullable"] = True
    if f.choices and f.kind != "strings":  # a list's choices are its items' (schema())
        out["enum"] = list(f.choices)
    if f.kind == "integer":
        out["minimum"], out["maximum"] = f.low, f.high
    if f.kind == "string":
        out["maxLength"] = f.max_length
        if not f.blank:
            out["minLength"] = 1
            out["pattern"] = NOT_BLANK
        if f.pattern is not None:
            out["pattern"] = f.pattern
        if len(f.formats) == 1:
            out["format"] = f.formats[0]
        elif f.formats:
            out["anyOf"] = [{"format": name} for name in f.formats]


def _unicode_problem(value: str) -> str | None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode text (no lone surrogates)"
    if "\x00" in value:
        return "must not contain U+0000 (NUL): it cannot be stored"
    return None


def _check_string(f: Field, value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    if len(value) > f.max_length:
        return f"must be at most {f.max_length} characters"
    if not f.blank and not _NOT_BLANK.search(value):
        return "must not be blank"
    if f.pattern is not None and re.search(f.pattern, value) is None:
        return f.mismatch(value) if callable(f.mismatch) else f.mismatch
    if problem := _unicode_problem(value):
        return problem
    if f.choices and value not in f.choices:
        return f"must be one of: {', '.join(f.choices)}"
    return None


def _check_boolean(f: Field, value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _check_integer(f: Field, value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return "must be an integer"
    if value < f.low:
        return f"must be at least {f.low}"
    if value > f.high:
        return f"must be at most {f.high}"
    return None


def _check_strings(f: Field, value: Any) -> str | None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return "must be a list of strings"
    if any(not _NOT_BLANK.search(v) for v in value):
        return "must not contain blank strings"
    if any(len(v) > f.max_length for v in value):
        return f"items must be at most {f.max_length} characters"
    wrong = sorted({v for v in value if f.choices and v.strip() not in f.choices})
    if wrong:
        return f"{wrong[0][:80]!r} is not one of: {', '.join(f.choices)}"
    for v in value:
        if problem := _unicode_problem(v):
            return problem
    return None


def _check_object(f: Field, value: Any) -> str | None:
    if not isinstance(value, dict):
        return "must be an object"
    if f.free_form and any(not isinstance(v, int) for v in value.values()):
        return "values must be integers or booleans"
    return None


_CHECKS: dict[str, Callable[[Field, Any], str | None]] = {
    "string": _check_string,
    "boolean": _check_boolean,
    "integer": _check_integer,
    "strings": _check_strings,
    "object": _check_object,
}


# --- Requests ---


def parse_body(data: Any, spec: Fields) -> dict[str, Any]:
    """The checked body; ``BadRequest`` listing every bad field."""
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object", {"body": "must be a JSON object"})
    problems: dict[str, str] = {}
    out = _check_fields(data, spec, "", problems)
    if problems:
        raise BadRequest("invalid request body", problems)
    return out


def _check_fields(
    data: Mapping[str, Any], spec: Fields, prefix: str, problems: dict[str, str]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in sorted(data.keys() - spec.keys()):
        problems[prefix + name] = "unknown field"
    for name, f in spec.items():
        if name not in data:
            if f.required:
                problems[prefix + name] = "required"
            continue
        problem = f.problem(data[name])
        if problem is not None:
            problems[prefix + name] = problem
        elif f.kind == "object" and data[name] is not None and not f.free_form:
            out[name] = _check_fields(data[name], f.fields or {}, f"{prefix}{name}.", problems)
        else:
            out[name] = data[name]
    return out


def parse_query(query: Mapping[str, str], spec: Fields) -> dict[str, Any]:
    """The checked query parameters, converted to their kinds."""
    problems: dict[str, str] = {}
    out: dict[str, Any] = {}
    for name, text in query.items():
        f = spec.get(name)
        if f is None:
            problems[name] = "unknown query parameter"
            continue
        value, problem = _from_text(f, text)
        problem = problem or f.problem(value)
        if problem is None:
            out[name] = value
        else:
            problems[name] = problem
    if problems:
        raise BadRequest("invalid query parameters", problems)
    return out


def _from_text(f: Field, text: str) -> tuple[Any, str | None]:
    """A query string as a value of ``f``'s kind, or what is wrong with it."""
    if f.kind == "boolean":
        low = text.strip().lower()
        if low in _TRUE or low in _FALSE:
            return low in _TRUE, None
        return None, "must be true or false"
    if f.kind == "integer":  # digits only: no "1_000", " 7", "١٢"; int64 range
        if not _INTEGER_TEXT.fullmatch(text):
            return None, "must be an integer"
        return int(text), None
    return text, None


ADD_OR_REMOVE: Mapping[str, Any] = MappingProxyType(
    {
        "anyOf": [
            {"required": ["add"], "properties": {"add": {"minItems": 1}}},
            {"required": ["remove"], "properties": {"remove": {"minItems": 1}}},
        ]
    }
)
"""``Route.body_rules`` of a membership change: something to add or to remove.
(That the two lists do not share a name cannot be said in JSON Schema.)"""

PATH_FIELD = Field("string", blank=False)
"""A path parameter without a spec of its own."""


def parse_path(params: Mapping[str, str], spec: Fields) -> dict[str, str]:
    """Path parameters; one outside its choices is an unknown resource (404),
    one too long or blank is a bad request (400)."""
    problems: dict[str, str] = {}
    for name, value in params.items():
        f = spec.get(name, PATH_FIELD)
        if f.choices and value not in f.choices:
            raise NotFound(f"unknown {name} {value!r} (one of: {', '.join(f.choices)})")
        if problem := f.problem(value):
            problems[name] = problem
    if problems:
        raise BadRequest("invalid path", problems)
    return dict(params)


# --- Routes ---


@dataclass(frozen=True, slots=True)
class Call:
    """One checked request, as a handler sees it."""

    ctx: AdminContext
    path: Mapping[str, str]
    query: Mapping[str, Any]
    body: Mapping[str, Any]
    actor: str

    @property
    def note(self) -> str:
        """The body's ``note`` (stripped), or ""."""
        note = self.body.get("note")
        return note.strip() if isinstance(note, str) else ""


Handler = Callable[[Call], Awaitable[Any]]
"""Returns the JSON-ready answer; the route's ``status`` is the HTTP status."""


@dataclass(frozen=True, slots=True)
class Route:
    """One admin route: served, validated and documented from this value."""

    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    query: Fields = field(default_factory=lambda: EMPTY)
    body: Fields | None = None
    path_fields: Fields = field(default_factory=lambda: EMPTY)
    status: int = 200
    response: str | None = None  # a component schema name
    conflict: bool = False  # may answer 409
    changes: bool = False  # writes (and audits) something
    uses_store: bool = False  # reads the store itself, not only the memory (may answer 503)
    upstream: str | None = None  # may answer 502: what could not be read (e.g. "the directory")
    body_rules: Mapping[str, Any] | None = None  # more JSON Schema for the body (documented
    # rules across fields that the handler checks, e.g. "a filter or all")
    description: str = ""
    produces: tuple[str, ...] = ()  # a streamed (non-JSON-object) answer: its media types

    @property
    def params(self) -> list[str]:
        """The path parameter names, in order."""
        return _PATH_PARAM.findall(self.path)
