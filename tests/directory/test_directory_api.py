"""The directory routes' answers match the OpenAPI document, with a directory
configured (a real slapd): the status, a sync report, and each error answer."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
from directory_support import Api, ldap_gateway

from sentry.testing.slapd import Slapd


def conforms(value: Any, schema: dict[str, Any], doc: dict[str, Any], where: str = "$") -> None:
    """A small JSON-schema check ($ref, allOf, type, nullable, enum, required, properties)."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return conforms(value, doc["components"]["schemas"][name], doc, where)
    if value is None:
        assert schema.get("nullable") or not schema, f"{where}: null"
        return None
    for part in schema.get("allOf", ()):
        conforms(value, part, doc, where)
    kinds: dict[str, Any] = {"object": dict, "array": list, "string": str, "boolean": bool}
    kinds |= {"integer": int, "number": (int, float)}
    if "type" in schema:
        assert isinstance(value, kinds[schema["type"]]), f"{where}: not {schema['type']}"
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in enum"
    if isinstance(value, dict):
        assert not set(schema.get("required", ())) - value.keys(), f"{where}: missing"
        props = schema.get("properties")
        if props is not None and "required" in schema:
            assert set(value) <= set(props), f"{where}: undocumented {set(value) - set(props)}"
        for key, sub in (props or {}).items():
            if key in value:
                conforms(value[key], sub, doc, f"{where}.{key}")
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in set(value) - set(props or {}):
                conforms(value[key], extra, doc, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            conforms(item, schema["items"], doc, f"{where}[{i}]")
    return None


async def _check(api: Api, doc: dict[str, Any], method: str, path: str) -> int:
    status, answer = await api.call(method, path, {} if method == "POST" else None)
    op = doc["paths"][path][method.lower()]
    assert str(status) in op["responses"], (method, path, status, answer)
    conforms(answer, op["responses"][str(status)]["content"]["application/json"]["schema"], doc)
    return status


async def test_directory_answers_match_the_document(
    slapd: Slapd, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with ldap_gateway(tmp_path, slapd) as gw:
        api = Api(gw, session)
        doc = await api.ok("GET", "/api/openapi.json")
        assert await _check(api, doc, "GET", "/api/directory") == 200  # never synced
        assert await _check(api, doc, "POST", "/api/directory/sync") == 200
        assert await _check(api, doc, "GET", "/api/directory") == 200  # with its last report
        await asyncio.to_thread(slapd.delete, "bob")
        assert await _check(api, doc, "POST", "/api/directory/sync") == 200
        await slapd.stop()
        assert await _check(api, doc, "POST", "/api/directory/sync") == 502
        assert await _check(api, doc, "GET", "/api/directory") == 200
        responses = doc["paths"]["/api/directory/sync"]["post"]["responses"]
        assert {"200", "400", "401", "409", "502", "503"} <= set(responses)
