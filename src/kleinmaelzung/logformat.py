"""How `kmz` processes write their log: readable lines, or JSON lines for log shippers.

One line per event, its structured fields (`extra=`: agent, instrument,
peer, reason, ...) after the message as ``key=value``, or as the keys of one
JSON object per line with ``--log-format json`` (journald, Loki, Elastic and
Vector read them as they are). Peers' free text reaches these fields (an
agent's error detail, a gap's reason): in text it is made printable, so a
newline cannot forge a line; JSON escapes it.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from .protocol.text import printable

LogFormat = Literal["text", "json"]
FORMATS: tuple[LogFormat, ...] = ("text", "json")

#: Attributes every `LogRecord` has: the rest came from ``extra=``.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message  key=value ...``"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = " ".join(f"{k}={printable(str(v), 300)}" for k, v in _extras(record).items())
        return f"{line}  {extra}" if extra else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``message``,
    the record's extras, and ``exception`` with its traceback if it has one."""

    _encoder = msgspec.json.Encoder(enc_hook=str)

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _extras(record).items():
            event.setdefault(key, value)
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        return self._encoder.encode(event).decode()


def configure_logging(verbose: bool = False, log_format: LogFormat = "text") -> None:
    """Log to stderr in `log_format`; debug details if `verbose`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True
    )
    if not verbose:
        # pymodbus logs every timeout at ERROR with frame dumps; the modbus
        # driver reports each failure as the instrument's status instead.
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
