"""The AsyncAPI document: valid AsyncAPI 3.0, and the same protocol as the code.

Generated from the message types (`protocol.asyncapi`); these tests hold it
to the AsyncAPI 3.0.0 JSON Schema (tests/protocol/data) and to the codec:
each endpoint lists exactly its direction's messages, every example message
validates against its payload schema, and a message the codec refuses does
not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

import aiohttp
import jsonschema
import msgspec
import pytest

from kleinmaelzung.hub import RunningHub
from kleinmaelzung.protocol import (
    AgentMessage,
    ClientMessage,
    HubToAgentMessage,
    HubToClientMessage,
    encode,
)
from kleinmaelzung.protocol.asyncapi import asyncapi_document

from .test_codec import EXAMPLES

SCHEMA = Path(__file__).parent / "data" / "asyncapi-3.0.0.schema.json"
DOCUMENT = asyncapi_document()


def payload_validator(tag: str) -> jsonschema.Draft202012Validator:
    """Validates one message type's payload, its $refs resolved within the document."""
    ref = DOCUMENT["components"]["messages"][tag]["payload"]["$ref"]
    schema = {**DOCUMENT, "$ref": ref}
    return jsonschema.Draft202012Validator(schema)


def test_the_document_is_valid_asyncapi_3() -> None:
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(DOCUMENT)]
    assert errors == []
    broken = json.loads(json.dumps(DOCUMENT))
    broken["operations"]["agent_send"]["action"] = "shout"
    assert list(validator.iter_errors(broken)), "the schema check must be able to fail"


@pytest.mark.parametrize(
    ("operation", "union"),
    [
        ("agent_receive", AgentMessage),
        ("agent_send", HubToAgentMessage),
        ("client_receive", ClientMessage),
        ("client_send", HubToClientMessage),
    ],
)
def test_each_operation_lists_exactly_its_directions_messages(operation: str, union: Any) -> None:
    listed = {
        ref["$ref"].rsplit("/", 1)[1] for ref in DOCUMENT["operations"][operation]["messages"]
    }
    assert listed == {member.__struct_config__.tag for member in get_args(union)}


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_every_example_message_matches_its_payload_schema(message: Any) -> None:
    tag = type(message).__struct_config__.tag
    payload_validator(tag).validate(msgspec.json.decode(encode(message)))


def test_a_message_the_codec_refuses_fails_its_schema_too() -> None:
    validator = payload_validator("command")
    good = {"type": "command", "id": "1", "instrument": "kiln-air", "name": "tare"}
    validator.validate(good)
    for bad in (
        {**good, "instrument": "Kiln Air"},  # breaks the id rule
        {**good, "timeout_s": 0},  # must be > 0
        {k: v for k, v in good.items() if k != "name"},  # missing
        {**good, "colour": "red"},  # unknown field
    ):
        assert not validator.is_valid(bad), bad


async def test_the_hub_serves_its_document(hub: RunningHub) -> None:
    host = hub.url.removeprefix("http://")
    async with (
        aiohttp.ClientSession() as http,
        http.get(hub.url + "/api/asyncapi.json") as response,
    ):
        assert response.status == 200
        assert await response.json() == asyncapi_document(host)
