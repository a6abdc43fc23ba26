"""Instrument ids and glob patterns."""

from __future__ import annotations

import pytest

from kleinmaelzung.protocol import is_instrument_id, is_literal, is_pattern, matches, matching


@pytest.mark.parametrize("text", ["kiln-air", "a", "germ.chamber_2", "0x"])
def test_valid_ids(text: str) -> None:
    assert is_instrument_id(text)


@pytest.mark.parametrize("text", ["", "Kiln", "-x", "a b", "a/b", "x" * 65, "kiln-*"])
def test_invalid_ids(text: str) -> None:
    assert not is_instrument_id(text)


def test_globs() -> None:
    ids = ["kiln-air", "kiln-exhaust", "balance", "germ-chamber"]
    assert matching("kiln-*", ids) == ["kiln-air", "kiln-exhaust"]
    assert matching("*", ids) == ids
    assert matching("balanc?", ids) == ["balance"]
    assert matching("[bg]*", ids) == ["balance", "germ-chamber"]
    assert not matches("kiln", "kiln-air")
    assert is_literal("balance")
    assert not is_literal("kiln-*")


@pytest.mark.parametrize("text", ["kiln-[", "a]b[", "KILN", "a b", ""])
def test_invalid_patterns(text: str) -> None:
    assert not is_pattern(text)
