"""Structured logs: one JSON object per line, with the request id and the record's fields."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from server.logs import configure, request_id
from server.settings import LogFormat, LogLevel


def _lines(fmt: LogFormat) -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure(LogLevel.INFO, fmt)
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    stream = io.StringIO()
    handler.setStream(stream)
    yield stream
    root.handlers[:], root.level = handlers, level


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    yield from _lines(LogFormat.JSON)


@pytest.fixture
def text_lines() -> Iterator[io.StringIO]:
    yield from _lines(LogFormat.TEXT)


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


def test_a_text_log_line_cannot_be_forged_from_a_path_or_a_request_id(
    text_lines: io.StringIO,
) -> None:
    """A path decoded from `/x%0a2026-12-02 ... ERROR ...` (and a request id, from a
    header) stays on its line; a traceback still follows on lines of its own."""
    log = logging.getLogger("snapens.access")
    forged = "/v2/models/x\n2026-12-02 09:00:00,000 ERROR snapens.server [-] forged\r"
    token = request_id.set("id\nERROR")
    try:
        log.info("%s %s %d", "GET", forged, 404)
    finally:
        request_id.reset(token)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed\tonce")
    lines = text_lines.getvalue().splitlines()
    assert lines[0].endswith(
        "[id\\x0aERROR] GET /v2/models/x\\x0a2026-12-02 09:00:00,000 "
        "ERROR snapens.server [-] forged\\x0d 404"
    )
    assert lines[1].endswith("ERROR snapens.access [-] failed\tonce")
    assert lines[2] == "Traceback (most recent call last):" and lines[-1] == "RuntimeError: boom"
