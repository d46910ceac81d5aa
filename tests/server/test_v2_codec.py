"""The Open Inference Protocol codec (server.protocol.v2_codec) and body inflation
(server.protocol.compression), without a server: request bodies decoded to batches and
options, answers encoded and read back (with tritonclient's own reader), and each
malformed request's status and message, decoded inside `client_input` as the route does."""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton

from server.errors import ServingError, client_input
from server.model import Answer
from server.protocol import binary
from server.protocol.compression import inflate
from server.protocol.v2_codec import (
    DEFAULT_OUTPUTS,
    MODEL_VERSION,
    OUTPUTS,
    OutputRequest,
    ParsedRequest,
    decode_inputs,
    encode_answer,
    model_metadata,
    read_envelope,
)
from server.protocol.v2_models import InferenceResponse
from snapens.ensemble import combine, softmax
from snapens.manifest import InputSpec

SPEC = InputSpec(name="input", shape=[-1, 1, 8, 8], pixel_range=(0, 16), color_mode="L")
CLASSES = ["zero", "one", "two", "three"]
MAX_ROWS = 4


def decode(body: bytes, header_length: str | None = None) -> ParsedRequest:
    """What the route does: both decoding steps in one guarded block."""
    with client_input("request"):
        return decode_inputs(read_envelope(body, header_length, SPEC, MAX_ROWS), SPEC, MAX_ROWS)


def request(x: Any, shape: list[int] | None = None, **fields: Any) -> bytes:
    tensor = {"name": "input", "shape": shape or list(np.shape(x)), "datatype": "FP32", "data": x}
    return json.dumps({"inputs": [tensor], **fields}).encode()


def pixels(n: int) -> np.ndarray:
    return np.random.default_rng(n).uniform(0, 16, size=(n, 1, 8, 8)).astype(np.float32)


def answer(rows: int = 3, members: int = 2) -> Answer:
    logits = np.random.default_rng(0).normal(0, 2, size=(members, rows, len(CLASSES)))
    member_probs = softmax(logits).astype(np.float32)
    cycles = list(range(5 - members + 1, 6))
    return Answer(combine(member_probs), CLASSES, cycles, member_probs)


def test_a_json_request_decodes_to_its_batch_and_default_options() -> None:
    x = pixels(3)
    parsed = decode(request(x.tolist(), id="r1"))
    np.testing.assert_array_equal(parsed.x, x)
    assert parsed.x.dtype == np.float32 and parsed.m is None and parsed.id == "r1"
    assert parsed.outputs == tuple(OutputRequest(name) for name in DEFAULT_OUTPUTS)
    flat = decode(request(x.reshape(-1).tolist(), shape=[3, 1, 8, 8]))  # flat data works too
    np.testing.assert_array_equal(flat.x, x)


def test_parameters_choose_m_members_and_binary_outputs() -> None:
    parameters = {"m": 2, "members": True, "binary_data_output": True}
    parsed = decode(request(pixels(1).tolist(), parameters=parameters))
    assert parsed.m == 2
    assert parsed.outputs == tuple(OutputRequest(name, binary=True) for name in OUTPUTS)
    outputs = [
        {"name": "label"},
        {"name": "probabilities", "parameters": {"classification": 2, "binary_data": True}},
    ]
    parsed = decode(request(pixels(1).tolist(), outputs=outputs))
    assert parsed.outputs == (
        OutputRequest("label"),
        OutputRequest("probabilities", binary=True, classification=2),
    )


def test_a_stock_clients_binary_request_decodes() -> None:
    x = pixels(4)
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    wanted = [triton.InferRequestedOutput("mutual_information", binary_data=True)]
    body, header_length = triton.InferenceServerClient.generate_request_body(
        [tensor], wanted, request_id="7", parameters={"m": 1}
    )
    parsed = decode(body, str(header_length))
    np.testing.assert_array_equal(parsed.x, x)
    assert parsed.m == 1 and parsed.id == "7"
    assert parsed.outputs == (OutputRequest("mutual_information", binary=True),)


def test_a_json_answer_carries_every_figure_and_the_snapshots() -> None:
    given = answer()
    parsed = decode(request(pixels(3).tolist(), id="abc", parameters={"members": True}))
    encoded = encode_answer("digits", parsed, given)
    assert encoded.media_type == "application/json" and encoded.headers == {}
    document = json.loads(encoded.body)
    assert document["model_name"] == "digits" and document["model_version"] == MODEL_VERSION
    assert document["id"] == "abc"
    assert document["parameters"] == {"m": 2, "snapshots": [4, 5]}
    outputs = {o["name"]: o for o in document["outputs"]}
    assert list(outputs) == list(OUTPUTS)
    probabilities = outputs["probabilities"]
    assert probabilities["datatype"] == "FP32" and probabilities["shape"] == [3, 4]
    np.testing.assert_allclose(
        np.reshape(probabilities["data"], (3, 4)), given.result.probabilities, atol=1e-7
    )
    assert outputs["label"]["datatype"] == "INT64"
    assert outputs["label"]["data"] == given.result.label.tolist()
    assert outputs["class_name"]["data"] == [CLASSES[i] for i in given.result.label]
    for name in ("confidence", "mutual_information", "member_std"):
        np.testing.assert_allclose(outputs[name]["data"], getattr(given.result, name), atol=1e-7)
    assert outputs["member_probabilities"]["shape"] == [2, 3, 4]
    assert outputs["member_labels"]["data"] == given.result.member_labels.reshape(-1).tolist()


def test_a_binary_answer_reads_back_with_a_stock_client() -> None:
    given = answer()
    outputs = [
        {"name": "probabilities", "parameters": {"binary_data": True}},
        {"name": "class_name", "parameters": {"binary_data": True}},
        {"name": "member_labels", "parameters": {"binary_data": True}},
        {"name": "confidence"},  # JSON among binary outputs
    ]
    encoded = encode_answer("digits", decode(request(pixels(3).tolist(), outputs=outputs)), given)
    assert encoded.media_type == "application/octet-stream"
    header_length = int(encoded.headers[binary.HEADER_LENGTH])
    result = triton.InferResult.from_response_body(encoded.body, header_length=header_length)
    np.testing.assert_array_equal(result.as_numpy("probabilities"), given.result.probabilities)
    assert result.as_numpy("class_name").tolist() == [
        CLASSES[i].encode() for i in given.result.label
    ]
    np.testing.assert_array_equal(result.as_numpy("member_labels"), given.result.member_labels)
    np.testing.assert_allclose(result.as_numpy("confidence"), given.result.confidence, atol=1e-7)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"id": 'ünï"code', "parameters": {"members": True, "binary_data_output": True}},
        {"outputs": [{"name": "probabilities", "parameters": {"classification": 2}}]},
        {
            "outputs": [
                {"name": "label", "parameters": {"binary_data": True}},
                {"name": "confidence"},
            ]
        },
    ],
)
def test_the_answers_header_is_the_documented_inference_response(fields: dict[str, Any]) -> None:
    """The header is written as plain data, not through the response model: it must still
    be exactly that model's JSON (its field order, no empty fields)."""
    encoded = encode_answer("digits", decode(request(pixels(3).tolist(), **fields)), answer())
    length = encoded.headers.get(binary.HEADER_LENGTH)
    header = encoded.body if length is None else encoded.body[: int(length)]
    documented = InferenceResponse.model_validate_json(header)
    assert documented.model_dump_json(exclude_none=True).encode() == header


def test_classification_answers_the_top_k_as_score_index_label() -> None:
    given = answer(rows=2)
    outputs = [{"name": "probabilities", "parameters": {"classification": 9}}]  # k beyond K
    encoded = encode_answer("digits", decode(request(pixels(2).tolist(), outputs=outputs)), given)
    (output,) = json.loads(encoded.body)["outputs"]
    assert output["datatype"] == "BYTES" and output["shape"] == [2, 4]
    for n, row in enumerate(np.reshape(output["data"], (2, 4))):
        scores = [entry.split(":") for entry in row]
        order = np.argsort(-given.result.probabilities[n], kind="stable")
        assert [int(index) for _, index, _ in scores] == order.tolist()
        assert [label for _, _, label in scores] == [CLASSES[i] for i in order]
        np.testing.assert_allclose(
            [float(s) for s, _, _ in scores], given.result.probabilities[n][order], atol=1e-6
        )


def test_metadata_before_a_snapshot_set_has_loaded() -> None:
    metadata = model_metadata("digits", None, {"ready": False})
    assert metadata.inputs == [] and metadata.parameters == {"ready": False}
    assert metadata.versions == [MODEL_VERSION]
    shapes = {o.name: o.shape for o in metadata.outputs}
    assert shapes["probabilities"] == [-1, -1] and shapes["member_labels"] == [-1, -1]
    assert [o.name for o in metadata.outputs] == list(OUTPUTS)


def binary_body(shape: list[int], size: Any, blob: bytes) -> tuple[bytes, str]:
    tensor = {
        "name": "input",
        "shape": shape,
        "datatype": "FP32",
        "parameters": {"binary_data_size": size},
    }
    header = json.dumps({"inputs": [tensor]}).encode()
    return header + blob, str(len(header))


ONE = pixels(1).tolist()
FLOATS = np.zeros(64, dtype="<f4").tobytes()

# (case, body, Inference-Header-Content-Length, status, part of the message)
ERRORS: list[tuple[str, bytes, str | None, int, str]] = [
    ("malformed JSON", b'{"inputs": [', None, 400, "malformed JSON"),
    ("not an object", b"[1, 2]", None, 400, "request: "),
    ("no inputs", b'{"inputs": []}', None, 400, "request: "),
    ("5000-digit integer", request(None).replace(b"null", b"9" * 5000), None, 400, "malformed"),
    (
        "wrong input name",
        json.dumps(
            {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [0]}]}
        ).encode(),
        None,
        400,
        "expected one input 'input' of FP32 [N, 1, 8, 8]; got 'x'",
    ),
    (
        "datatype",
        request(ONE).replace(b'"FP32"', b'"INT32"'),
        None,
        400,
        "must be FP32, got INT32",
    ),
    ("shape", request([[[[0] * 9] * 8]]), None, 400, "expected [N, 1, 8, 8]"),
    ("rows over the limit", request(None, [5, 1, 8, 8]), None, 413, "at most 4 per request"),
    ("rows beyond int64", request(None, [2**62, 1, 8, 8]), None, 413, "at most 4 per request"),
    ("count", request(list(range(63)), [1, 1, 8, 8]), None, 400, "needs 64 values, got 63"),
    ("booleans", request([True] * 64, [1, 1, 8, 8]), None, 400, "data must be numbers"),
    ("strings", request(["0"] * 64, [1, 1, 8, 8]), None, 400, "data must be numbers"),
    ("ragged", request([[0], [0, 0]], [1, 1, 8, 8]), None, 400, "data must be numbers"),
    ("no data", request(None, [1, 1, 8, 8]), None, 400, "neither data nor binary_data_size"),
    (
        "NaN literal",  # not JSON
        request(None, [1, 1, 8, 8]).replace(b"null", b"[NaN" + b", 0" * 63 + b"]"),
        None,
        400,
        "(NaN and Infinity are not JSON; expected finite pixel values)",
    ),
    (
        "binary data without its header length",
        binary_body([1, 1, 8, 8], 256, np.full(64, 1e-38, dtype="<f4").tobytes())[0],
        None,
        400,
        "(binary tensor data after the JSON? send the Inference-Header-Content-Length header)",
    ),
    (
        "infinity in binary data",
        *binary_body([1, 1, 8, 8], 256, np.full(64, np.inf, dtype="<f4").tobytes()),
        400,
        "NaN or infinity",
    ),
    ("empty batch", request([], [0, 1, 8, 8]), None, 400, "empty batch"),
    ("m not whole", request(ONE, parameters={"m": 1.5}), None, 400, "'m' must be a whole"),
    ("m a boolean", request(ONE, parameters={"m": True}), None, 400, "'m' must be a whole"),
    ("members", request(ONE, parameters={"members": "yes"}), None, 400, "'members' must be"),
    (
        "binary_data_output",
        request(ONE, parameters={"binary_data_output": 1}),
        None,
        400,
        "'binary_data_output' must be true or false",
    ),
    ("unknown output", request(ONE, outputs=[{"name": "logits"}]), None, 400, "unknown output"),
    (
        "classification of labels",
        request(ONE, outputs=[{"name": "label", "parameters": {"classification": 2}}]),
        None,
        400,
        "classification takes a whole number k >= 1",
    ),
    (
        "classification of 0",
        request(ONE, outputs=[{"name": "probabilities", "parameters": {"classification": 0}}]),
        None,
        400,
        "classification takes a whole number k >= 1",
    ),
    ("header length not a number", request(ONE), "ten", 400, "must be a byte count"),
    ("header length beyond the body", request(ONE), "100000", 400, "does not fit a body"),
    ("binary size mismatch", *binary_body([1, 1, 8, 8], 255, FLOATS), 400, "does not match"),
    ("binary size a string", *binary_body([1, 1, 8, 8], "256", FLOATS), 400, "whole number"),
    ("binary size for the shape", *binary_body([1, 1, 8, 8], 128, FLOATS[:128]), 400, "needs 256"),
    (
        "binary data nobody declares",
        request(ONE) + FLOATS,
        str(len(request(ONE))),
        400,
        "no input declares binary_data_size",
    ),
]


@pytest.mark.parametrize(
    ("body", "header_length", "status", "message"),
    [case[1:] for case in ERRORS],
    ids=[case[0] for case in ERRORS],
)
def test_a_malformed_request_is_a_client_error_naming_the_problem(
    body: bytes, header_length: str | None, status: int, message: str
) -> None:
    with pytest.raises(ServingError) as raised:
        decode(body, header_length)
    assert raised.value.status == status
    assert message in raised.value.message


def test_gzip_and_deflate_bodies_inflate() -> None:
    body = request(pixels(2).tolist())
    assert inflate(gzip.compress(body), "gzip", len(body)) == body
    assert inflate(zlib.compress(body), "Deflate", len(body)) == body
    assert inflate(body, None, 1) == body  # identity: the body limit was the middleware's
    assert inflate(body, "identity", 1) == body


@pytest.mark.parametrize(
    ("body", "encoding", "status", "message"),
    [
        (b"{}", "br", 415, "Content-Encoding 'br': expected gzip, deflate or none"),
        (b"{}", "", 415, "Content-Encoding ''"),
        (b"not gzip", "gzip", 400, "the body is not valid gzip data"),
        (gzip.compress(b"0" * 5000), "gzip", 413, "exceeds the limit of 4096 bytes"),
    ],
)
def test_a_body_that_does_not_inflate_is_a_client_error(
    body: bytes, encoding: str, status: int, message: str
) -> None:
    with pytest.raises(ServingError) as raised:
        inflate(body, encoding, 4096)
    assert raised.value.status == status and message in raised.value.message


def test_whole_numbers_may_be_written_as_floats_but_not_as_strings_or_booleans() -> None:
    """JSON has one number type (JSON Schema's "integer" includes 2.0); anything else where a
    number belongs is refused, not coerced."""
    parsed = decode(request(pixels(2).tolist(), shape=[2.0, 1, 8, 8], parameters={"m": 2.0}))
    assert parsed.x.shape == (2, 1, 8, 8) and parsed.m == 2 and isinstance(parsed.m, int)
    for shape, parameters in (
        ([True, 1, 8, 8], {}),
        (["2", 1, 8, 8], {}),
        ([2, 1, 8, 8], {"m": "2"}),
    ):
        with pytest.raises(ServingError) as refused:
            decode(request(pixels(2).tolist(), shape=shape, parameters=parameters))
        assert refused.value.status == 400
