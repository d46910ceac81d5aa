"""Structured logs: one JSON object per line, each carrying the request id of the
request it belongs to."""

from __future__ import annotations

import contextvars
import json
import logging
from datetime import UTC, datetime
from typing import Any

import orjson

from server.settings import LogFormat, LogLevel

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
            "pid": record.process,  # which of the --workers processes
        }
        entry |= getattr(record, "fields", {})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        try:  # every request is logged: orjson is about 15 times faster here
            return orjson.dumps(entry, default=str).decode()
        except orjson.JSONEncodeError:  # what it refuses (an int beyond 64 bits, say)
            return json.dumps(entry, default=str)


# Control characters as escapes (a newline as \x0a), tab kept.
_CONTROL = {c: f"\\x{c:02x}" for c in [*range(32), 127] if c != ord("\t")}


class TextFormatter(logging.Formatter):
    """One line per record, whatever a client put in a path or a header: the line's control
    characters are escaped, so a request for `/x%0a... ERROR ...` cannot forge a line of
    its own. A traceback still follows on lines of its own."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        return super().formatMessage(record).translate(_CONTROL)


def configure(level: LogLevel, fmt: LogFormat) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == LogFormat.JSON else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access",):
        logging.getLogger(noisy).disabled = True
