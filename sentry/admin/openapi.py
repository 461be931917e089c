"""The admin API's OpenAPI 3 document, rendered from the route table.

Approach. ``openapi_document`` walks the ``Route`` values of
``sentry.admin.schema`` (the same ones the API registers and validates
requests against), so the document cannot drift from what is served. Each
``Field`` renders its own JSON schema (``Field.schema``: every limit the
check applies, stated); this module adds what follows from the route: its
path and query parameters, the request body (``schema.object_schema``, no
additional properties, plus the route's ``body_rules``), the success answer
(a named schema, or a streamed body) and the error answers the route can
give (401 always; 403 for a change, 400 with input, 404 with a path
parameter, 409, 502 and 503 as the route declares them, 503 with its
``Retry-After``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .schema import PATH_FIELD, Route, object_schema

__all__ = ["openapi_document"]


def openapi_document(
    routes: Iterable[Route], schemas: Mapping[str, Any], *, title: str, version: str
) -> dict[str, Any]:
    """The OpenAPI 3.0 document describing ``routes``."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": version},
        "paths": paths,
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": _ERROR_SCHEMA, **schemas},
        },
    }


_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string"},
        "fields": {"type": "object", "additionalProperties": {"type": "string"}},
        "kind": {"type": "string", "description": "502: what went wrong (e.g. connect, bind)"},
        "problems": {
            "type": "array",
            "description": "409 of a configuration write: each push that could not work",
            "items": {
                "type": "object",
                "required": ["device", "setting", "reason", "message"],
                "properties": {
                    "device": {"type": "string"},
                    "setting": {"type": "string"},
                    "reason": {"type": "string", "enum": ["MIXED_BACKEND", "ANDROID_LIMIT"]},
                    "message": {"type": "string"},
                },
            },
        },
    },
}


def _json(description: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _operation(route: Route) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": route.handler.__name__.lstrip("_"),
        "summary": route.summary,
        "tags": [route.tag],
        "parameters": _parameters(route),
        "responses": _responses(route),
    }
    if route.description:
        op["description"] = route.description
    if route.body is not None:
        required = any(f.required for f in route.body.values())
        schema = {**object_schema(route.body), **(route.body_rules or {})}
        content = {"application/json": {"schema": schema}}
        op["requestBody"] = {"required": required, "content": content}
    return op


def _parameters(route: Route) -> list[dict[str, Any]]:
    out = []
    for name in route.params:
        f = route.path_fields.get(name, PATH_FIELD)
        out.append({"name": name, "in": "path", "required": True, "schema": f.schema()})
    for name, f in route.query.items():
        out.append({"name": name, "in": "query", "required": f.required, "schema": f.schema()})
    return out


def _responses(route: Route) -> dict[str, Any]:
    ok: dict[str, Any] = {"type": "object"}
    if route.response is not None:
        ok = {"$ref": f"#/components/schemas/{route.response}"}
    errors = {"401": "missing or wrong bearer token"}
    if route.changes or route.method != "GET":
        errors["403"] = "the read-only token cannot change anything"
    if route.body is not None or route.query or route.params:
        errors["400"] = "invalid input (per-field messages in `fields`)"
    if route.params:
        errors["404"] = "no such resource"
    if route.conflict:
        errors["409"] = "not allowed in the current state"
    if route.changes or route.uses_store:
        errors["503"] = "the state store cannot keep changes now (nothing was changed)"
    if route.upstream is not None:
        errors["502"] = f"{route.upstream} could not be read (nothing was changed; `kind` says why)"
    out: dict[str, Any] = {str(route.status): _json("success", ok)}
    if route.produces:
        binary: dict[str, Any] = {"schema": {"type": "string", "format": "binary"}}
        content = {media: binary for media in route.produces}
        if "application/json" in content and route.response is not None:  # a streamed array
            items = {"$ref": f"#/components/schemas/{route.response}"}
            content["application/json"] = {"schema": {"type": "array", "items": items}}
        out[str(route.status)] = {"description": "success (streamed)", "content": content}
    ref = {"$ref": "#/components/schemas/Error"}
    out.update({code: _json(text, ref) for code, text in sorted(errors.items())})
    if "503" in out:
        retry = {"description": "seconds until the store is checked again", "schema": _RETRY}
        out["503"]["headers"] = {"Retry-After": retry}
    return out


_RETRY = {"type": "integer", "minimum": 1, "maximum": 3600}
