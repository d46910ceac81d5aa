"""What a hostile client sends: every request answers 4xx with a JSON error naming what
was expected, and the server keeps serving. One row per case a review found giving a 5xx
or stalling the server, and the neighbours of each."""

from __future__ import annotations

import base64
import gzip
import io
import json
import logging
import socket
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from server.logs import request_id
from tests.server.conftest import LiveServer, copy_model, start_server, wait_until

INFER = "/v2/models/digits/infer"
PREDICT = "/v1/models/digits:predict"
UPLOAD = "/v1/models/digits/images:predict"
DEEP = "[" * 5_000  # deeper than the parser takes (1024), fewer than 256 rows hold
HUGE_INT = "9" * 5000  # more digits than Python converts from text
BIG_INT = 10**400  # an integer no float holds


def _png(width: int, height: int, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


GIANT_PNG = _png(12000, 12000)  # 144 megapixels in about 140 KB


def _forged_png(width: int, height: int) -> bytes:
    """A small real PNG whose header chunk is rewritten to declare width × height."""
    data = bytearray(_png(8, 8))
    data[16:24] = struct.pack(">II", width, height)  # IHDR's fields, after length and type
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _ico() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (16, 16)).save(buffer, "ICO")
    return buffer.getvalue()


def _tensor_json(shape: list[Any], data: str | None = None, **fields: Any) -> bytes:
    """A v2 request whose `data` is the raw JSON text `data` (what json.dumps cannot make)."""
    tensor = {"name": "input", "shape": shape, "datatype": "FP32", "data": "@", **fields}
    return json.dumps({"inputs": [tensor]}).replace('"@"', data or "null").encode()


def _binary(shape: list[int], size: Any, blob: bytes) -> tuple[bytes, dict[str, str]]:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": shape,
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": size},
                }
            ]
        }
    ).encode()
    return header + blob, {"Inference-Header-Content-Length": str(len(header))}


def _multipart(*files: tuple[str, bytes, str]) -> dict[str, Any]:
    return {"files": [("file", f) for f in files]}


JSON = {"Content-Type": "application/json"}
# Parsing costs by structure: this took the event loop 6 s to refuse after parsing.
ARRAY_BOMB = gzip.compress(
    _tensor_json([1, 1, 8, 8], "[" + "[0]," * (8 * 1024 * 1024 - 100) + "[0]]"), 9
)
BINARY_OVERFLOW, BINARY_OVERFLOW_HEADERS = _binary([4294967296, 4294967296, 1, 1], 0, b"")
BINARY_STRING_SIZE, BINARY_STRING_SIZE_HEADERS = _binary([1, 1, 8, 8], "256", b"\0" * 256)
BINARY_OK, _headers = _binary([1, 1, 8, 8], 256, b"\0" * 256)
BINARY_OK_LENGTH = _headers["Inference-Header-Content-Length"]
BOTH_HEADER = _tensor_json([1, 1, 8, 8], json.dumps([0] * 64), parameters={"binary_data_size": 256})
BOTH = BOTH_HEADER + b"\0" * 256
BOTH_HEADERS = {"Inference-Header-Content-Length": str(len(BOTH_HEADER))}

# (case, method, path, request keyword arguments, expected status, part of the message)
CASES: list[tuple[str, str, str, dict[str, Any], int, str]] = [
    (
        "shape product overflows int64 (JSON)",
        "POST",
        INFER,
        {"content": _tensor_json([4611686018427387904, 1, 8, 8], "[0]"), "headers": JSON},
        413,
        "at most 256 per request",
    ),
    (
        "shape with two 2**32 dimensions (JSON)",
        "POST",
        INFER,
        {"content": _tensor_json([4294967296, 4294967296, 1, 1], "[0]"), "headers": JSON},
        400,
        "expected [N, 1, 8, 8]",
    ),
    (
        "shape with two 2**32 dimensions (binary)",
        "POST",
        INFER,
        {"content": BINARY_OVERFLOW, "headers": BINARY_OVERFLOW_HEADERS},
        400,
        "expected [N, 1, 8, 8]",
    ),
    (
        "integer too large for a float (v2)",
        "POST",
        INFER,
        {"content": _tensor_json([1, 1, 8, 8], json.dumps([BIG_INT] * 64)), "headers": JSON},
        400,
        "malformed JSON: number is infinity",
    ),
    (
        "integer too large for a float (v1)",
        "POST",
        PREDICT,
        {"content": json.dumps({"instances": [[[BIG_INT] * 8] * 8]}), "headers": JSON},
        400,
        "malformed JSON: number is infinity",
    ),
    (
        "5000-digit integer literal (v2)",
        "POST",
        INFER,
        {"content": _tensor_json([1, 1, 8, 8], f"[{HUGE_INT}]"), "headers": JSON},
        400,
        "malformed JSON",
    ),
    (
        "5000-digit integer literal (v1)",
        "POST",
        PREDICT,
        {"content": f'{{"instances": [{HUGE_INT}]}}', "headers": JSON},
        400,
        "malformed JSON: number is infinity",
    ),
    (
        "deep nesting in data",
        "POST",
        INFER,
        {"content": _tensor_json([1, 1, 8, 8], DEEP), "headers": JSON},
        400,
        "malformed JSON: depth limit exceeded",
    ),
    (
        "deep nesting in parameters",
        "POST",
        INFER,
        {"content": f'{{"inputs": [], "parameters": {DEEP}'.encode(), "headers": JSON},
        400,
        "malformed JSON: depth limit exceeded",
    ),
    (
        "deep nesting in v1 instances",
        "POST",
        PREDICT,
        {"content": f'{{"instances": {DEEP}'.encode(), "headers": JSON},
        400,
        "malformed JSON: depth limit exceeded",
    ),
    (
        "truncated JSON (v1)",
        "POST",
        PREDICT,
        {"content": b'{"instances": [[1, 2', "headers": JSON},
        400,
        "malformed JSON: unexpected end of data",
    ),
    (
        "binary_data_size as a string",
        "POST",
        INFER,
        {"content": BINARY_STRING_SIZE, "headers": BINARY_STRING_SIZE_HEADERS},
        400,
        "binary_data_size must be a whole number of bytes, got '256'",
    ),
    (
        "booleans as FP32 pixels (v2)",
        "POST",
        INFER,
        {"content": _tensor_json([1, 1, 8, 8], json.dumps([True] * 64)), "headers": JSON},
        400,
        "data must be numbers",
    ),
    (
        "booleans as pixels (v1)",
        "POST",
        PREDICT,
        {"json": {"instances": [[[True] * 8] * 8]}},
        400,
        "expected numbers",
    ),
    ("no inputs", "POST", INFER, {"json": {"inputs": []}}, 400, "inputs: List should have"),
    ("no instances", "POST", PREDICT, {"json": {"instances": []}}, 422, "instances"),
    (
        "multipart upload of a non-image",
        "POST",
        UPLOAD,
        _multipart(("notes.txt", b"hello", "text/plain")),
        415,
        "is not a readable image: not a PNG, JPEG, BMP, GIF, WebP or TIFF image",
    ),
    (
        "an ICO file (a format no image here is in)",
        "POST",
        UPLOAD,
        _multipart(("icon.png", _ico(), "image/png")),
        415,
        "not a PNG, JPEG, BMP, GIF, WebP or TIFF image",
    ),
    (
        "a PNG header declaring 100000 × 100000 pixels (Pillow's own guard)",
        "POST",
        UPLOAD,
        _multipart(("forged.png", _forged_png(100_000, 100_000), "image/png")),
        413,
        "the limit is 25000000 pixels",
    ),
    (
        "empty multipart body",
        "POST",
        UPLOAD,
        {"content": b"", "headers": {"Content-Type": "multipart/form-data; boundary=x"}},
        400,
        "no image in the request",
    ),
    (
        "multipart body cut before its closing boundary",
        "POST",
        UPLOAD,
        {
            "content": b'--x\r\nContent-Disposition: form-data; name="file"; '
            b'filename="a.png"\r\nContent-Type: image/png\r\n\r\n\x89PNG',
            "headers": {"Content-Type": "multipart/form-data; boundary=x"},
        },
        400,
        "ending with its closing boundary '--x--'",
    ),
    (
        "multipart text field, no file",
        "POST",
        UPLOAD,
        {
            "content": b'--x\r\nContent-Disposition: form-data; name="file"\r\n\r\n'
            b"cat.png\r\n--x--\r\n",
            "headers": {"Content-Type": "multipart/form-data; boundary=x"},
        },
        400,
        "fields with a filename",
    ),
    (
        "12000×12000 PNG upload",
        "POST",
        UPLOAD,
        _multipart(("giant.png", GIANT_PNG, "image/png")),
        413,
        "exceeds the limit of 25000000 pixels",
    ),
    (
        "12000×12000 PNG as the raw body",
        "POST",
        UPLOAD,
        {"content": GIANT_PNG, "headers": {"Content-Type": "image/png"}},
        413,
        "144000000 pixels exceeds the limit",
    ),
    (
        "12000×12000 PNG in base64 (v1 JSON)",
        "POST",
        PREDICT,
        {"json": {"instances": [{"b64": base64.b64encode(GIANT_PNG).decode()}]}},
        413,
        "exceeds the limit of 25000000 pixels",
    ),
    (
        "twelve 12000×12000 PNGs in one upload",
        "POST",
        UPLOAD,
        _multipart(*[(f"g{i}.png", GIANT_PNG, "image/png") for i in range(12)]),
        413,
        "exceeds the limit",
    ),
    (
        "invalid gzip body",
        "POST",
        INFER,
        {"content": b"not gzip", "headers": {**JSON, "Content-Encoding": "gzip"}},
        400,
        "not valid gzip data",
    ),
    (
        "32 MiB of one-value arrays in 32 KiB of gzip (v2)",
        "POST",
        INFER,
        {"content": ARRAY_BOMB, "headers": {**JSON, "Content-Encoding": "gzip"}},
        413,
        "holds more than 33792 values or arrays; at most 256 rows of [N, 1, 8, 8]",
    ),
    (
        "more values than 256 rows hold (v2)",
        "POST",
        INFER,
        {"content": _tensor_json([1, 1, 8, 8], "[" + "0," * 40_000 + "0]"), "headers": JSON},
        413,
        "at most 256 rows of [N, 1, 8, 8] (16384 values) per request",
    ),
    (
        "more one-value arrays than 256 rows hold (v1)",
        "POST",
        PREDICT,
        {"content": '{"instances": [' + "[0]," * 40_000 + "[0]]}", "headers": JSON},
        413,
        "at most 256 rows of [N, 1, 8, 8] (16384 values) per request",
    ),
    (
        "40 MiB chunked body, no length given (v1)",
        "POST",
        PREDICT,
        {"content": [b" " * 1024 * 1024] * 40, "headers": JSON},  # a list: sent chunked
        413,
        "request body exceeds the limit of 33554432 bytes",
    ),
    (
        "binary_data as the string 'false'",
        "POST",
        INFER,
        {
            "content": _tensor_json([1, 1, 8, 8], json.dumps([0] * 64)).replace(
                b'"inputs"',
                b'"outputs": [{"name": "label", "parameters": {"binary_data": "false"}}], "inputs"',
            ),
            "headers": JSON,
        },
        400,
        "parameter 'binary_data' must be true or false, got 'false'",
    ),
    (
        "a shape of strings",
        "POST",
        INFER,
        {"content": _tensor_json(["1", 1, 8, 8], json.dumps([0] * 64)), "headers": JSON},
        400,
        "shape",
    ),
    (
        "a shape with a fraction (2.0 is the whole number 2 in JSON, 1.5 is not)",
        "POST",
        INFER,
        {"content": _tensor_json([1.5, 1, 8, 8], json.dumps([0] * 64)), "headers": JSON},
        400,
        "shape",
    ),
    (
        "both data and binary_data_size",
        "POST",
        INFER,
        {"content": BOTH, "headers": BOTH_HEADERS},
        400,
        "has both data and binary_data_size; send one",
    ),
    (
        "an output asked for twice",
        "POST",
        INFER,
        {
            "content": _tensor_json([1, 1, 8, 8], json.dumps([0] * 64)).replace(
                b'"inputs"', b'"outputs": [{"name": "label"}, {"name": "label"}], "inputs"'
            ),
            "headers": JSON,
        },
        400,
        "outputs requested more than once: label",
    ),
    (
        "the header length given twice",
        "POST",
        INFER,
        {
            "content": BINARY_OK,
            "headers": [
                ("Inference-Header-Content-Length", BINARY_OK_LENGTH),
                ("Inference-Header-Content-Length", "1"),
            ],
        },
        400,
        "Inference-Header-Content-Length is given more than once; send it once",
    ),
    (
        "header length with a sign",
        "POST",
        INFER,
        {
            "content": BINARY_OK,
            "headers": {"Inference-Header-Content-Length": "+" + BINARY_OK_LENGTH},
        },
        400,
        "Inference-Header-Content-Length must be a byte count, got '+",
    ),
    (
        "bytes after the gzip stream",
        "POST",
        INFER,
        {
            "content": gzip.compress(_tensor_json([1, 1, 8, 8], json.dumps([0] * 64))) + b"junk",
            "headers": {**JSON, "Content-Encoding": "gzip"},
        },
        400,
        "the body has 4 bytes after its gzip stream",
    ),
    (
        "truncated gzip stream",
        "POST",
        INFER,
        {
            "content": gzip.compress(_tensor_json([1, 1, 8, 8], json.dumps([0] * 64)))[:-12],
            "headers": {**JSON, "Content-Encoding": "gzip"},
        },
        400,
        "the body is truncated gzip data",
    ),
    (
        "m as true (v1)",
        "POST",
        PREDICT,
        {"json": {"instances": [[[0] * 8] * 8], "m": True}},
        422,
        "m",
    ),
    (
        "m as a string (v1)",
        "POST",
        PREDICT,
        {"json": {"instances": [[[0] * 8] * 8], "m": "2"}},
        422,
        "m",
    ),
    (
        "members as a string (v1)",
        "POST",
        PREDICT,
        {"json": {"instances": [[[0] * 8] * 8], "members": "yes"}},
        422,
        "members",
    ),
    (
        "pixels of 0..255 to a model of 0..16 (v2)",
        "POST",
        INFER,
        {"content": _tensor_json([1, 1, 8, 8], json.dumps([255] * 64)), "headers": JSON},
        400,
        "has pixel values from 255 to 255; the model takes raw pixels in its pixel_range [0, 16]",
    ),
    (
        "a pixel of -2**63 (v1)",
        "POST",
        PREDICT,
        {"json": {"instances": [[[-(2**63)] + [0] * 7] + [[0] * 8] * 7]}},
        400,
        "in its pixel_range [0, 16]",
    ),
    ("TRACE", "TRACE", INFER, {}, 405, "Method Not Allowed"),
    ("GET on v1 predict", "GET", PREDICT, {}, 405, "Method Not Allowed"),
    ("PUT on v1 predict", "PUT", PREDICT, {}, 405, "Method Not Allowed"),
    ("OPTIONS on v1 predict", "OPTIONS", PREDICT, {}, 405, "Method Not Allowed"),
    ("unknown model", "POST", "/v2/models/../../etc/infer", {"json": {}}, 404, "Not Found"),
]


@pytest.fixture(scope="module")
def hostile_server(
    synthetic_digits: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """One server for the whole table, so a case that broke it fails the cases after it."""
    repo = copy_model(synthetic_digits, tmp_path_factory.mktemp("hostile") / "models")
    live = start_server(repo)
    yield live
    live.stop()


@pytest.mark.parametrize(
    ("case", "method", "path", "kwargs", "status", "message"), CASES, ids=[c[0] for c in CASES]
)
def test_hostile_requests_get_a_4xx_json_error_and_the_server_keeps_serving(
    hostile_server: LiveServer,
    caplog: pytest.LogCaptureFixture,
    case: str,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    message: str,
) -> None:
    with caplog.at_level(logging.ERROR), hostile_server.client() as http:
        response = http.request(method, path, **kwargs)
        assert response.status_code == status, (case, response.text[:300])
        assert response.headers["content-type"] == "application/json"
        assert message in response.json()["error"], case
        if status == 405:  # exactly the path's documented methods (schemathesis checks it)
            assert response.headers["allow"] == "POST"
        assert http.get("/v2/health/live").status_code == 200
        assert http.get("/v2/health/ready").status_code == 200
    assert not [r for r in caplog.records if r.name.startswith("snapens")], case


def test_answers_name_no_server_path(hostile_server: LiveServer) -> None:
    """The repository's location on the server never reaches a client."""
    root = str(hostile_server.settings.repository.resolve())
    with hostile_server.client() as http:
        answers = [
            http.post("/v2/repository/models/nope/load"),
            http.post("/v2/repository/index"),
            http.get("/v2/models/digits"),
            http.get("/v1/models/nope"),
        ]
    assert [a.status_code for a in answers] == [404, 200, 200, 404]
    for answer in answers:
        assert (
            root not in answer.text and str(hostile_server.settings.repository) not in answer.text
        )


def test_an_unexpected_error_is_one_500_logged_once_with_the_request_id(
    hostile_server: LiveServer,
) -> None:
    """Not a client's doing: a route that fails on a server fault. The middleware answers
    500 with the JSON error shape and logs it once, with the request id."""
    app = hostile_server.server.config.app

    @app.get("/test-only/fault")  # type: ignore[misc]
    async def fault() -> None:
        raise RuntimeError("disk on fire")

    seen: list[tuple[str, str]] = []

    class Recorder(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.exc_info and "disk on fire" in str(record.exc_info[1]):
                seen.append((record.name, request_id.get()))

    recorder = Recorder()
    logging.getLogger().addHandler(recorder)
    try:
        with hostile_server.client() as http:
            response = http.get("/test-only/fault", headers={"X-Request-ID": "req-42"})
            assert http.get("/v2/health/live").status_code == 200
    finally:
        logging.getLogger().removeHandler(recorder)
    assert response.status_code == 500
    assert response.json() == {"error": "internal server error"}
    assert response.headers["x-request-id"] == "req-42"
    assert seen == [("snapens.server", "req-42")]


def test_the_pixel_limit_is_a_setting(serve: Any) -> None:
    server = serve(max_image_pixels=100)
    with server.client() as http:
        small = http.post(UPLOAD, content=_png(8, 8), headers={"Content-Type": "image/png"})
        large = http.post(UPLOAD, content=_png(11, 10), headers={"Content-Type": "image/png"})
    assert small.status_code == 200
    assert (
        large.status_code == 413 and "110 pixels exceeds the limit of 100" in large.json()["error"]
    )


def _partial_request(path: str, host: str) -> bytes:
    """Headers promising a 1000-byte body, and its valid first few bytes."""
    kind, start = "application/json", '{"inputs"'
    if path == UPLOAD:
        kind = "multipart/form-data; boundary=x"
        start = '--x\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {kind}\r\n"
        f"Content-Length: 1000\r\n\r\n{start}"
    ).encode()


@pytest.mark.parametrize("path", [INFER, PREDICT, UPLOAD])
def test_a_client_that_leaves_mid_body_is_a_499_not_a_server_error(
    hostile_server: LiveServer, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    """Headers promising 1000 bytes, a few sent, the connection closed: nobody is left to
    answer, so the access log and the metrics record 499 (nginx's "client closed
    request"), and no error is logged: a 500 there set off alerts for a client's doing."""
    host, port = hostile_server.address.split(":")
    with caplog.at_level(logging.INFO):
        with socket.create_connection((host, int(port))) as conn:
            conn.sendall(_partial_request(path, host))
        wait_until(lambda: any(r.name == "snapens.access" for r in caplog.records))
    (line,) = [r for r in caplog.records if r.name == "snapens.access"]
    assert line.getMessage() == f"POST {path} 499"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    with hostile_server.client() as http:
        metrics = http.get("/metrics").text
        assert http.get("/v2/health/live").status_code == 200
    assert 'status="499"' in metrics
    five_hundreds = [m for m in metrics.splitlines() if 'status="5' in m and "/test-only/" not in m]
    assert not five_hundreds  # the one other test here that makes a 500 does it on purpose


@pytest.mark.parametrize("path", [INFER, PREDICT, UPLOAD])
def test_a_client_that_stalls_mid_body_gets_408_and_the_server_keeps_serving(
    serve: Any, path: str
) -> None:
    """Headers promising 1000 bytes, a few sent, then nothing: after --body-timeout-s the
    server answers 408 instead of holding the connection open for as long as the client
    likes; requests that send their bodies are not affected."""
    server = serve(body_timeout_s=0.5)
    host, port = server.address.split(":")
    with socket.create_connection((host, int(port)), timeout=20) as conn:
        conn.sendall(_partial_request(path, host))
        answer = conn.recv(65536).decode("latin-1")
    status_line, _, rest = answer.partition("\r\n")
    assert status_line == "HTTP/1.1 408 Request Timeout", answer[:300]
    assert '{"error":"no part of the request body arrived for 0.5 s"}' in rest
    with server.client() as http:
        assert http.get("/v2/health/live").status_code == 200
        body = {"instances": [[[0] * 8] * 8]}
        assert http.post("/v1/models/digits:predict", json=body).status_code == 200


@pytest.mark.parametrize("path", [INFER, UPLOAD])
def test_a_body_trickled_below_the_minimum_rate_gets_408(serve: Any, path: str) -> None:
    """Headers promising 1000 bytes, then a byte every 0.2 s: never a stall as long as
    --body-timeout-s, but once the grace is over the average rate (5 bytes/s) is below
    --min-body-rate, so the server answers 408 instead of holding the connection while
    the declared length lasts (over three minutes here)."""
    server = serve(body_timeout_s=30, min_body_rate=100, body_rate_grace_s=0.5)
    host, port = server.address.split(":")
    with socket.create_connection((host, int(port)), timeout=20) as conn:
        conn.sendall(_partial_request(path, host))
        conn.settimeout(0.2)
        deadline = time.monotonic() + 20
        answer = ""
        while not answer and time.monotonic() < deadline:
            try:
                answer = conn.recv(65536).decode("latin-1")
            except TimeoutError:
                conn.sendall(b"0")
    status_line, _, rest = answer.partition("\r\n")
    assert status_line == "HTTP/1.1 408 Request Timeout", answer[:300]
    assert "bytes/s expected after the first 0.5 s" in rest
    assert "at least 100 bytes/s" in rest
    with server.client() as http:  # a body sent at once is not affected
        body = {"instances": [[[0] * 8] * 8]}
        assert http.post("/v1/models/digits:predict", json=body).status_code == 200


def _padded_infer_body(size: int) -> bytes:
    """A valid v2 JSON request for one digit, padded with whitespace to `size` bytes."""
    tensor = {"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0] * 64}
    body = json.dumps({"inputs": [tensor]}).encode()
    return body + b" " * (size - len(body))


def _infer_head(host: str, length: int | None) -> bytes:
    framing = "Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}"
    return (
        f"POST {INFER} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"{framing}\r\n\r\n"
    ).encode()


def _status_and_headers(conn: socket.socket) -> tuple[str, str]:
    answer = conn.recv(65536).decode("latin-1")
    status_line, _, rest = answer.partition("\r\n")
    return status_line, rest


def test_bodies_past_the_in_flight_budget_get_503_and_the_budget_frees_as_they_end(
    serve: Any,
) -> None:
    """One client holds most of the budget with a body it has not finished: a request that
    declares more than is left is refused before its body is read, a chunked one when it
    goes past; a small one still fits; once the holder's request ends, the budget is free."""
    server = serve(max_body_bytes=300_000, max_body_bytes_in_flight=500_000)
    host, port = server.address.split(":")
    held = _padded_infer_body(300_000)
    with socket.create_connection((host, int(port)), timeout=20) as holder:
        holder.sendall(_infer_head(host, len(held)) + held[:250_000])
        with server.client() as http:
            held_line = "snapens_request_body_bytes_in_flight 250000.0"
            wait_until(lambda: held_line in http.get("/metrics").text)

        with socket.create_connection((host, int(port)), timeout=20) as declared:
            declared.sendall(_infer_head(host, 300_000))
            status_line, rest = _status_and_headers(declared)
        assert status_line == "HTTP/1.1 503 Service Unavailable", rest[:300]
        assert "retry-after: 1\r\n" in rest.lower()
        assert (
            '{"error":"the server holds 250000 bytes of request bodies and takes at most '
            '500000 at once; 300000 more do not fit: send again shortly"}'
        ) in rest

        with socket.create_connection((host, int(port)), timeout=20) as chunked:
            chunk = _padded_infer_body(260_000)
            chunked.sendall(_infer_head(host, None) + b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            status_line, rest = _status_and_headers(chunked)
        assert status_line == "HTTP/1.1 503 Service Unavailable", rest[:300]
        assert "of request bodies and takes at most 500000 at once" in rest

        with server.client() as http:
            small = http.post(INFER, content=_padded_infer_body(1_000))
            assert small.status_code == 200, small.text

        holder.sendall(held[250_000:])
        status_line, _ = _status_and_headers(holder)
        assert status_line == "HTTP/1.1 200 OK"

    with server.client() as http:
        again = http.post(INFER, content=_padded_infer_body(300_000))
        assert again.status_code == 200, again.text
        metrics = http.get("/metrics").text
        assert 'status="503"' in metrics
        assert "snapens_request_body_bytes_in_flight 0.0" in metrics
