"""docs/protocol.md stays true: every example decodes as claimed, nothing goes undocumented."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from kleinmaelzung.protocol import (
    ALL_MESSAGE_TYPES,
    CloseCode,
    ErrorCode,
    Invalid,
    any_decoder,
)

DOC = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text(encoding="utf-8")
EXAMPLE = re.compile(r"<!-- example: (?P<claim>[^>]+?) -->\n```json\n(?P<body>.*?)\n```", re.S)
EXAMPLES = [(m["claim"], m["body"]) for m in EXAMPLE.finditer(DOC)]
TAGS = {str(t.__struct_config__.tag): t for t in ALL_MESSAGE_TYPES}


def section(tag: str) -> str:
    """The doc's section for one message: from its heading to the next heading."""
    match = re.search(rf"^### {tag}\n(.*?)(?=^##)", DOC, re.S | re.M)
    assert match, f"docs/protocol.md has no '### {tag}' section"
    return match[1]


@pytest.mark.parametrize(("claim", "body"), EXAMPLES, ids=[c for c, _ in EXAMPLES])
def test_example_decodes_as_claimed(claim: str, body: str) -> None:
    result = any_decoder().decode(body.encode())
    if claim.startswith("invalid "):
        assert isinstance(result, Invalid), result
        assert result.error.code == claim.split()[1]
    else:
        assert not isinstance(result, Invalid), result.error.message
        assert type(result) is TAGS[claim]


def test_every_message_type_has_an_example() -> None:
    assert set(TAGS) <= {claim for claim, _ in EXAMPLES}


@pytest.mark.parametrize("tag", sorted(TAGS))
def test_every_field_is_documented_in_its_section(tag: str) -> None:
    text = section(tag)
    missing = [f.name for f in msgspec.structs.fields(TAGS[tag]) if f"`{f.name}`" not in text]
    assert not missing, f"{tag}: fields not documented: {missing}"


def test_every_error_and_close_code_is_documented() -> None:
    assert [c.value for c in ErrorCode if f"`{c.value}`" not in DOC] == []
    assert [c.value for c in CloseCode if f"| {c.value} |" not in DOC] == []
