"""The WebSocket protocol as an AsyncAPI 3.0 document, generated from the message types.

Generated, not written: the payload schemas are `msgspec.json.schema` of the
very Structs the codec decodes, and each endpoint's operations list exactly
the members of its direction's union (`AgentMessage`, `HubToAgentMessage`,
`ClientMessage`, `HubToClientMessage`), so the document cannot drift from
the code. The hub serves it at ``/api/asyncapi.json``. Operations are the
hub's: it *receives* what agents and clients send, and *sends* what they
receive.
"""

from __future__ import annotations

import inspect
from typing import Any, get_args

import msgspec

from .errors import CloseCode, ErrorCode
from .messages import (
    PROTOCOL_VERSION,
    AgentMessage,
    ClientMessage,
    HubToAgentMessage,
    HubToClientMessage,
)

#: (channel, the hub's action, the direction's union, what it carries).
_OPERATIONS: tuple[tuple[str, str, Any, str], ...] = (
    ("agent", "receive", AgentMessage, "What an agent sends the hub."),
    ("agent", "send", HubToAgentMessage, "What the hub sends an agent."),
    ("client", "receive", ClientMessage, "What a client sends the hub."),
    ("client", "send", HubToClientMessage, "What the hub sends a client."),
)

_CHANNELS = {
    "agent": (
        "/ws/agent",
        "One agent's connection: its hello first, then its instruments' samples, status "
        "and replies; the hub's acks and commands.",
    ),
    "client": (
        "/ws/client",
        "One client's connection (dashboard, script, kmz): its hello first, then "
        "subscriptions, commands and lists; the hub's data, status and replies.",
    ),
}


def message_types() -> dict[str, type[msgspec.Struct]]:
    """Every message type of any direction, by its ``type`` tag."""
    types: dict[str, type[msgspec.Struct]] = {}
    for _, _, union, _ in _OPERATIONS:
        for member in get_args(union):
            types[member.__struct_config__.tag] = member
    return types


def _summary(struct: type[msgspec.Struct]) -> str:
    doc = inspect.getdoc(struct) or ""
    return doc.split("\n\n")[0].replace("\n", " ")


def asyncapi_document(host: str = "127.0.0.1:8765", protocol: str = "ws") -> dict[str, Any]:
    """The AsyncAPI 3.0 document of this protocol version, for a hub at `host` (ws or wss)."""
    types = message_types()
    by_name = sorted(types.items())
    _, schemas = msgspec.json.schema_components(
        [struct for _, struct in by_name], ref_template="#/components/schemas/{name}"
    )
    messages = {
        tag: {
            "name": tag,
            "title": struct.__name__,
            "summary": _summary(struct),
            "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/{struct.__name__}"},
        }
        for tag, struct in by_name
    }
    channels = {
        name: {
            "address": address,
            "description": description,
            "messages": {
                tag: {"$ref": f"#/components/messages/{tag}"}
                for channel, _, union, _ in _OPERATIONS
                if channel == name
                for tag in sorted(m.__struct_config__.tag for m in get_args(union))
            },
        }
        for name, (address, description) in _CHANNELS.items()
    }
    operations = {
        f"{channel}_{action}": {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": summary,
            "messages": [
                {"$ref": f"#/channels/{channel}/messages/{m.__struct_config__.tag}"}
                for m in sorted(get_args(union), key=lambda m: m.__struct_config__.tag)
            ],
        }
        for channel, action, union, summary in _OPERATIONS
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Kleinmaelzung hub",
            "version": str(PROTOCOL_VERSION),
            "description": (
                "JSON text frames over WebSocket, one message per frame, each an object "
                "whose `type` names it. Error codes: "
                + ", ".join(f"`{code.value}`" for code in ErrorCode)
                + ". Close codes: "
                + ", ".join(f"{code.value} ({code.name.lower()})" for code in CloseCode)
                + ". docs/protocol.md says what each means."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {"hub": {"host": host, "protocol": protocol}},
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }
