"""The hub's REST API as an OpenAPI 3.1 document, served at ``/api/openapi.json``.

Generated where the code has types: every JSON body a route encodes or
decodes as a msgspec Struct (`InstrumentRecord`, `LogPage`, `History`, the
calibration records...) is described by `msgspec.json.schema_components` of
that very Struct. Written by hand where it has none: the routes' purposes,
their query parameters (read by hand in `params`) and the few answers built
as dicts (health, readiness, errors). `openapi_routes.ROUTES` is the table of both.

It cannot drift unnoticed: tests/hub/test_openapi.py holds the document to
the OpenAPI 3.1 schema, to the app's router (every ``/api`` route it serves
is documented here, and nothing else) and to a real hub's answers, which
must validate against the schemas documented for them. The WebSocket
protocol is the AsyncAPI document's (`protocol.asyncapi`).
"""

from __future__ import annotations

import functools
import re
from typing import Any

import msgspec
from aiohttp import web

from .. import __version__
from .auth.web import SESSION_COOKIE
from .openapi_routes import (
    JSON,
    PATH_PARAMS,
    PROBLEM,
    REF,
    ROUTES,
    TAGS,
    Route,
    log_stats_schema,
)
from .store.retention import LogStats, PruneReport

_SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "A personal API token (kmz token create --user NAME): "
        "`Authorization: Bearer kmz_...`. An agent's token cannot call the HTTP API.",
    },
    "session": {
        "type": "apiKey",
        "in": "cookie",
        "name": SESSION_COOKIE,
        "description": "The dashboard's session (POST /api/session). A POST, PUT or DELETE "
        "with it must also carry the page's Origin.",
    },
}


def _path_parameters(path: str) -> list[dict[str, Any]]:
    parameters = []
    for name in re.findall(r"{(\w+)}", path):
        description, schema = PATH_PARAMS[name]
        parameters.append(
            {
                "name": name,
                "in": "path",
                "required": True,
                "description": description,
                "schema": schema,
            }
        )
    return parameters


def _schema(shape: Any, schemas: dict[str, Any]) -> dict[str, Any]:
    if isinstance(shape, dict):
        return shape
    if isinstance(shape, str):  # a named component
        return {"$ref": REF.format(name=shape)}
    schema: dict[str, Any] = schemas[_type_key(shape)]
    return schema


def _type_key(shape: Any) -> str:
    return repr(shape)


def _problem_answer(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {JSON: {"schema": {"$ref": REF.format(name="Problem")}}},
    }


def _operation(route: Route, schemas: dict[str, Any]) -> dict[str, Any]:
    operation_id = re.sub(r"[^a-z0-9]+", "_", f"{route.method} {route.path}".lower()).strip("_")
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": route.summary,
        "tags": [route.tag],
    }
    who = "No credentials needed." if route.role is None else f"Needs the {route.role} role."
    operation["description"] = f"{who} {route.description}".strip()
    parameters = _path_parameters(route.path) + [
        {
            "name": p.name,
            "in": "query",
            "required": p.required,
            "description": p.description,
            "schema": p.schema,
        }
        for p in route.query
    ]
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {route.body.media: {"schema": _schema(route.body.shape, schemas)}},
        }
    ok: dict[str, Any] = {"description": "; ".join(b.description for b in route.answers) or "ok"}
    if route.answers:
        ok["content"] = {b.media: {"schema": _schema(b.shape, schemas)} for b in route.answers}
    responses: dict[str, Any] = {str(route.status): ok}
    errors = dict(route.errors or {})
    if route.role is not None:
        errors.setdefault(401, "no credentials, or credentials refused")
        errors.setdefault(403, "not allowed for this role or grant, or from this Origin")
        operation["security"] = [{"bearer": []}, {"session": []}]
        operation["x-kmz-role"] = str(route.role)
    else:
        operation["security"] = []
    for status, description in errors.items():
        responses[str(status)] = _problem_answer(description)
    for status, body in (route.others or {}).items():
        responses[str(status)] = {
            "description": body.description,
            "content": {body.media: {"schema": _schema(body.shape, schemas)}},
        }
    operation["responses"] = dict(sorted(responses.items()))
    return operation


def _components() -> tuple[dict[str, Any], dict[str, Any]]:
    """Schemas of every typed body, by `_type_key`, and the components they refer to."""
    types = []
    for route in ROUTES:
        for body in (*route.answers, route.body, *(route.others or {}).values()):
            if body is not None and not isinstance(body.shape, (dict, str)):
                types.append(body.shape)
    types.append(PruneReport)
    types.append(LogStats)
    unique = list({_type_key(t): t for t in types}.values())
    found, components = msgspec.json.schema_components(unique, ref_template=REF)
    return {_type_key(t): s for t, s in zip(unique, found, strict=True)}, components


def openapi_document(server: str = "http://127.0.0.1:8765") -> dict[str, Any]:
    """The OpenAPI 3.1 document of this hub's REST API, served at `server`.

    The parts are built once and shared between calls: copy before changing.
    """
    parts = _parts()
    return {
        "openapi": "3.1.0",
        "info": parts["info"],
        "servers": [{"url": server}],
        "tags": parts["tags"],
        "paths": parts["paths"],
        "components": parts["components"],
    }


@functools.cache
def _parts() -> dict[str, Any]:
    # Built once: the schemas of ~50 Structs take about 8 ms here, longer
    # than a sample may wait on the hub's loop.
    schemas, components = _components()
    components["Problem"] = PROBLEM
    components["LogStatsAnswer"] = log_stats_schema(components)
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, schemas)
    parts = {
        "info": {
            "title": "Kleinmaelzung hub HTTP API",
            "version": __version__,
            "summary": "Instruments, agents, the traffic log, history, export and calibration.",
            "description": "Every route under /api but the status, documents and sign-in ones "
            "needs a token (`Authorization: Bearer`) or the dashboard's session cookie; its "
            "role is named in each operation (x-kmz-role). Errors are JSON "
            "`{code, message}`. Live data and commands go over the WebSocket protocol: "
            "/api/asyncapi.json.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": [{"name": name, "description": text} for name, text in TAGS.items()],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": _SECURITY_SCHEMES,
        },
    }
    # A JSON round trip: msgspec's schemas keep a tuple field's default as a tuple.
    plain: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(parts))
    return plain


async def openapi_json(request: web.Request) -> web.Response:
    """`GET /api/openapi.json`: the REST API as an OpenAPI 3.1 document, for this hub's address.

    Public, like the AsyncAPI document: it describes, it holds no data.
    """
    document = openapi_document(f"{request.scheme}://{request.host}")
    return web.Response(body=msgspec.json.encode(document), content_type=JSON)
