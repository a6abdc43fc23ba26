"""The OpenAPI document: valid OpenAPI 3.1, the routes the app serves, and what they answer.

Generated from the route table and the msgspec types (`hub.openapi`); these
tests hold it to the OpenAPI 3.1 schema and its rules (openapi-spec-validator),
to the app's router (a route under /api without documentation fails here, and
so does documentation of a route that is gone), and to a real hub with auth:
each route that documents credentials refuses a request without them, and
real answers, good and bad, validate against the schema documented for their
status and media type.
"""

from __future__ import annotations

import copy
import inspect
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import msgspec
import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
from referencing.exceptions import Unresolvable

from kleinmaelzung.hub import HubConfig
from kleinmaelzung.hub.app import create_app
from kleinmaelzung.hub.openapi import openapi_document

from .auth_setup import Lab, agent_hello, auth_lab, greeted

DOCUMENT = openapi_document()
#: Values for the documented path parameters, to make real requests of templates.
PATH_VALUES = {"instrument": "kiln-air", "number": "KMZ-2026-1"}


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    """(METHOD, path template, operation) of every documented operation."""
    return [
        (method.upper(), path, operation)
        for path, item in DOCUMENT["paths"].items()
        for method, operation in item.items()
    ]


def concrete(template: str) -> str:
    path = template
    for name, value in PATH_VALUES.items():
        path = path.replace("{" + name + "}", value)
    return path


def _pointer(*parts: str) -> str:
    return "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def answer_validator(
    method: str, template: str, status: int, media: str
) -> jsonschema.Draft202012Validator:
    """Validates an answer against the schema documented for it, $refs resolved in the document."""
    operation = DOCUMENT["paths"][template][method.lower()]
    responses = operation["responses"]
    assert str(status) in responses, f"{method} {template}: status {status} is not documented"
    content = responses[str(status)].get("content", {})
    assert media in content, f"{method} {template} {status}: {media} is not documented"
    pointer = _pointer(
        "paths", template, method.lower(), "responses", str(status), "content", media, "schema"
    )
    return jsonschema.Draft202012Validator({**DOCUMENT, "$ref": pointer})


# --- the document itself ----------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1() -> None:
    validate(DOCUMENT, cls=OpenAPIV31SpecValidator)
    assert DOCUMENT["openapi"].startswith("3.1.")
    broken = copy.deepcopy(DOCUMENT)
    broken["paths"]["/api/instruments"]["get"]["responses"]["200"].pop("description")
    with pytest.raises(OpenAPIValidationError):
        validate(broken, cls=OpenAPIV31SpecValidator)
    unresolved = copy.deepcopy(DOCUMENT)
    del unresolved["components"]["schemas"]["InstrumentRecord"]
    with pytest.raises(Unresolvable):  # a $ref to nowhere
        validate(unresolved, cls=OpenAPIV31SpecValidator)


def test_every_route_under_api_is_documented_and_nothing_else(tmp_path: Path) -> None:
    app = create_app(config=HubConfig(host="127.0.0.1", port=0, data_dir=tmp_path))
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/api/")
        and route.method != "HEAD"  # aiohttp adds one to each GET
    }
    documented = {(method, path) for method, path, _ in operations()}
    assert sorted(served - documented) == [], "served but not documented (hub/openapi_routes.py)"
    assert sorted(documented - served) == [], "documented but not served"
    assert len(served) > 30


def test_each_documented_request_body_is_the_struct_its_handler_decodes(tmp_path: Path) -> None:
    app = create_app(config=HubConfig(host="127.0.0.1", port=0, data_dir=tmp_path))
    checked = 0
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if not path.startswith("/api/") or route.method == "HEAD":
            continue
        handler: Any = route.handler
        # The calibration routes wrap their handler (`calibration_routes._route`).
        cells = dict(zip(handler.__code__.co_freevars, handler.__closure__ or (), strict=True))
        inner = cells["handler"].cell_contents if "handler" in cells else handler
        decoded = re.findall(r"_body\(request, (\w+)\)", inspect.getsource(inner))
        operation = DOCUMENT["paths"][path][route.method.lower()]
        body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
        documented = body.get("schema", {}).get("$ref", "").rpartition("/")[2] or None
        assert documented == (decoded[0] if decoded else None), (route.method, path)
        checked += bool(decoded)
    assert checked >= 10


def test_each_operation_is_named_summarised_and_answers_problems_as_documented() -> None:
    ids = [operation["operationId"] for _, _, operation in operations()]
    assert len(ids) == len(set(ids))
    problem = {"$ref": "#/components/schemas/Problem"}
    for method, path, operation in operations():
        assert operation["summary"], (method, path)
        for status, response in operation["responses"].items():
            if status.startswith("4") or (status.startswith("5") and path != "/api/ready"):
                assert response["content"]["application/json"]["schema"] == problem


def test_the_bearer_token_and_the_session_cookie_are_the_security_schemes() -> None:
    schemes = DOCUMENT["components"]["securitySchemes"]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
    assert schemes["session"] == {
        **schemes["session"],
        "type": "apiKey",
        "in": "cookie",
        "name": "kmz_session",
    }
    public = set()
    for method, path, operation in operations():
        if operation["security"] == []:
            public.add(f"{method} {path}")
        else:
            assert operation["security"] == [{"bearer": []}, {"session": []}], (method, path)
            assert operation["x-kmz-role"] in ("viewer", "operator", "admin")
            assert {"401", "403"} <= operation["responses"].keys(), (method, path)
    assert public == {
        "GET /api/health",
        "GET /api/ready",
        "GET /api/asyncapi.json",
        "GET /api/openapi.json",
        "POST /api/session",
        "DELETE /api/session",
    }


# --- against a real hub --------------------------------------------------------------------


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    """A hub that requires tokens, with agent pi-1 serving kiln-air and balance, and a sample."""
    async with auth_lab(tmp_path) as lab:
        hello = agent_hello("pi-1", ("kiln-air", "balance"), lab.tokens["pi-1"])
        async with greeted(lab.url, "/ws/agent", hello) as agent:
            sample = {"instrument": "kiln-air", "seq": 1, "ts": 1.0, "values": {"mass": 1.5}}
            await agent.send({"type": "data", "samples": [sample]})
            await agent.receive_type("ack")  # logged: the log and history have it
            yield lab


async def test_a_route_that_documents_credentials_refuses_a_request_without_them(
    lab: Lab,
) -> None:
    async with aiohttp.ClientSession() as http:
        for method, path, operation in operations():
            async with http.request(method, lab.url + concrete(path)) as response:
                if operation["security"]:
                    assert response.status == 401, (method, path)
                    body = await response.json()
                    answer_validator(method, path, 401, "application/json").validate(body)
                else:
                    assert response.status != 401, (method, path)


#: (user, METHOD, path template, the request's path and query): answers that must match.
REQUESTS = [
    ("ada", "GET", "/api/health", "/api/health"),
    ("ada", "GET", "/api/ready", "/api/ready"),
    ("ada", "GET", "/api/instruments", "/api/instruments"),
    ("vic", "GET", "/api/instruments", "/api/instruments"),
    ("ada", "GET", "/api/agents", "/api/agents"),
    ("ada", "GET", "/api/session", "/api/session"),
    ("ada", "GET", "/api/log", "/api/log?instrument=kiln-air"),
    ("ada", "GET", "/api/log", "/api/log?limit=2"),
    ("ada", "GET", "/api/log/stats", "/api/log/stats"),
    ("ada", "GET", "/api/history/{instrument}", "/api/history/kiln-air?since=0"),
    ("ada", "GET", "/api/timeline/{instrument}", "/api/timeline/kiln-air"),
    ("ada", "GET", "/api/timeline", "/api/timeline?agent=pi-1"),
    ("ada", "GET", "/api/calibrations", "/api/calibrations"),
    ("ada", "GET", "/api/calibrations/due", "/api/calibrations/due?days=30"),
    ("ada", "GET", "/api/calibrations/corrections", "/api/calibrations/corrections"),
    ("ada", "GET", "/api/calibrations/standards", "/api/calibrations/standards"),
    ("ada", "GET", "/api/calibrations/instruments", "/api/calibrations/instruments"),
    ("ada", "GET", "/api/calibrations/procedures", "/api/calibrations/procedures"),
    ("ada", "GET", "/api/calibrations/laboratory", "/api/calibrations/laboratory"),
    # Refusals: each must be a documented status, its body a Problem.
    ("ada", "GET", "/api/calibrations/{number}", "/api/calibrations/KMZ-2026-1"),
    ("ada", "DELETE", "/api/instruments/{instrument}", "/api/instruments/no-such"),
    ("ada", "DELETE", "/api/instruments/{instrument}", "/api/instruments/kiln-air"),
    ("ada", "GET", "/api/history/{instrument}", "/api/history/kiln-air?since=soon"),
    ("ada", "GET", "/api/log", "/api/log?direction=sideways"),
    ("vic", "GET", "/api/log", "/api/log"),
    ("vic", "DELETE", "/api/instruments/{instrument}", "/api/instruments/kiln-air"),
]


async def test_real_answers_validate_against_their_documented_schemas(lab: Lab) -> None:
    statuses = set()
    async with aiohttp.ClientSession() as http:
        for user, method, template, path in REQUESTS:
            headers = {"Authorization": f"Bearer {lab.tokens[user]}"}
            async with http.request(method, lab.url + path, headers=headers) as response:
                media = response.content_type
                body = await response.json()
            validator = answer_validator(method, template, response.status, media)
            errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(body)]
            assert errors == [], (user, method, path, response.status, body)
            statuses.add(response.status)
    assert {200, 400, 403, 404, 409} <= statuses


async def test_the_instrument_list_is_what_the_document_says(lab: Lab) -> None:
    headers = {"Authorization": f"Bearer {lab.tokens['ada']}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(lab.url + "/api/instruments", headers=headers) as response,
    ):
        listed = await response.json()
    assert [r["id"] for r in listed] == ["balance", "kiln-air"]
    validator = answer_validator("GET", "/api/instruments", 200, "application/json")
    validator.validate(listed)
    # The check can fail: an answer unlike the documented one does.
    assert not validator.is_valid([{**listed[0], "state": "asleep"}])
    assert not validator.is_valid([{**listed[0], "colour": "red"}])


async def test_the_log_as_ndjson_is_one_documented_entry_per_line(lab: Lab) -> None:
    headers = {"Authorization": f"Bearer {lab.tokens['ada']}"}
    url = lab.url + "/api/log?instrument=kiln-air&format=ndjson"
    async with (
        aiohttp.ClientSession() as http,
        http.get(url, headers=headers) as response,
    ):
        assert response.status == 200
        lines = (await response.text()).splitlines()
    validator = answer_validator("GET", "/api/log", 200, "application/x-ndjson")
    assert lines
    for line in lines:
        validator.validate(json.loads(line))


async def test_the_hub_serves_its_document_to_anyone(lab: Lab) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(lab.url + "/api/openapi.json") as response,
    ):
        assert response.status == 200
        assert response.content_type == "application/json"
        served = msgspec.json.decode(await response.read())
    assert served == openapi_document(lab.url)
    assert served["servers"] == [{"url": lab.url}]
