"""Binary frames whose strings are not UTF-8 (found by fuzzing a running hub, issue 11)."""

from __future__ import annotations

import pytest

from kleinmaelzung.protocol import ErrorCode, Invalid, agent_decoder, client_decoder


@pytest.mark.parametrize(
    "frame",
    [
        b'"\xb6"',
        b'{"type": "\xb6"}',
        b'{"type": "list_instruments", "id": "\xb6"}',
        b'{"type": "subscribe", "id": "a", "patterns": ["\xff"]}',
        b'{"type": "command", "id": "a", "instrument": "x", "name": "t", "args": {"\xb6": 1}}',
        b'{"type": "data", "samples": [{"instrument": "\xc3\x28", "seq": 1, "ts": 1.0}]}',
    ],
)
def test_strings_that_are_not_utf8_are_invalid_json_not_an_exception(frame: bytes) -> None:
    for decoder in (client_decoder(), agent_decoder()):
        result = decoder.decode(frame)
        assert isinstance(result, Invalid)
        assert result.error.code == ErrorCode.INVALID_JSON
        assert "not UTF-8" in result.error.message
