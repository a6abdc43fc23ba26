"""The CRC-8 that Sensirion-style sensors put after every 16-bit word, and checking an answer."""

from __future__ import annotations

from ...errors import InstrumentError


def crc8(data: bytes, polynomial: int = 0x31, init: int = 0xFF) -> int:
    """CRC-8, MSB first, no final XOR; Sensirion's by default (SHT3x 4.12: 0xBEEF -> 0x92)."""
    crc = init
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ polynomial) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def strip_crc(answer: bytes, what: str, polynomial: int = 0x31, init: int = 0xFF) -> bytes:
    """The data of an answer of words with their CRCs (word, CRC, word, CRC ...).

    InstrumentError if the length is not words of 3, or a CRC does not match
    (naming the word): a noisy line, not a value to pass on.
    """
    if len(answer) % 3:
        raise InstrumentError(f"{what}: answer of {len(answer)} bytes, expected words of 3")
    data = bytearray()
    for at in range(0, len(answer), 3):
        word, crc = answer[at : at + 2], answer[at + 2]
        expected = crc8(word, polynomial, init)
        if expected != crc:
            raise InstrumentError(
                f"{what}: CRC mismatch in word {at // 3} (0x{word.hex().upper()}):"
                f" got 0x{crc:02X}, expected 0x{expected:02X}"
            )
        data += word
    return bytes(data)
