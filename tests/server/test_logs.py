"""Structured logs: one JSON object per line, with the request id and the record's fields."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from server.logs import configure, request_id
from server.settings import LogFormat, LogLevel


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure(LogLevel.INFO, LogFormat.JSON)
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    stream = io.StringIO()
    handler.setStream(stream)
    yield stream
    root.handlers[:], root.level = handlers, level


def test_each_record_is_one_json_line_with_its_request_id_and_fields(
    json_lines: io.StringIO,
) -> None:
    log = logging.getLogger("snapens.access")
    token = request_id.set("req-7")
    try:
        log.info("%s %s %d", "POST", "/v2/models/m/infer", 200, extra={"fields": {"ms": 1.5}})
        # What orjson refuses (an integer beyond 64 bits) is still written, by json.
        log.warning("big", extra={"fields": {"n": 2**70, "path": object()}})
    finally:
        request_id.reset(token)
    log.error("outside a request")
    first, second, third = (json.loads(line) for line in json_lines.getvalue().splitlines())
    assert first["msg"] == "POST /v2/models/m/infer 200" and first["ms"] == 1.5
    assert first["request_id"] == "req-7" and first["level"] == "info"
    assert first["logger"] == "snapens.access" and first["ts"].endswith("+00:00")
    assert second["n"] == 2**70 and second["path"].startswith("<object object")
    assert third["request_id"] == "-" and third["level"] == "error"
