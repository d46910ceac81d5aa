"""The Open Inference Protocol (KServe v2) as bytes in and bytes out, without HTTP.

Decoding takes a request body (JSON, or a JSON header followed by binary tensor data)
to the model's input batch and the answer's options, in two steps: `read_envelope` (the
header, validated against the schema) and `decode_inputs` (the tensor, checked against
the model's input). The routes (server.protocol.v2_endpoints) run both inside
`client_input`, so any failure of either is the client's: a 4xx, never a 5xx. Encoding
takes an ensemble's answer to the response body, JSON or, with the binary tensor
extension, a JSON header followed by the tensors' bytes; it raises nothing a client can
cause, because every option it reads was checked while decoding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from server.errors import BadRequest, MalformedJSON, PayloadTooLarge
from server.model import Answer
from server.protocol import binary
from server.protocol.json_types import integral
from server.protocol.tensors import DATATYPES, check_batch, check_json_size, expected_shape
from server.protocol.v2_models import (
    InferenceRequest,
    ModelMetadataResponse,
    RequestInput,
    TensorMetadata,
)
from server.runtime import EnsembleRuntime, Float32Array
from snapens.ensemble import DISAGREEMENT_FIGURES
from snapens.manifest import InputSpec

MODEL_VERSION = "1"
PLATFORM = "onnxruntime_onnx"
MEMBER_OUTPUTS = ("member_probabilities", "member_labels")
DEFAULT_OUTPUTS = ("probabilities", "label", "class_name", "confidence", *DISAGREEMENT_FIGURES)
OUTPUTS = (*DEFAULT_OUTPUTS, *MEMBER_OUTPUTS)
JSON_MEDIA_TYPE = "application/json"
BINARY_MEDIA_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class Envelope:
    """A request's JSON header, valid against the schema, and the binary data after it."""

    request: InferenceRequest
    blob: bytes = b""


@dataclass(frozen=True)
class OutputRequest:
    """One output to answer with, and how."""

    name: str
    binary: bool = False  # as binary tensor data after the JSON header
    classification: int | None = None  # the top k as b"score:index:label" instead


@dataclass(frozen=True)
class ParsedRequest:
    """A decoded inference request: the input batch and everything the answer needs."""

    x: Float32Array  # [N, C, H, W]
    m: int | None  # use the last m loaded snapshots (None: all of them)
    outputs: tuple[OutputRequest, ...]
    id: str | None = None


@dataclass(frozen=True)
class EncodedResponse:
    body: bytes
    media_type: str
    headers: dict[str, str]


# Decoding ------------------------------------------------------------------------------


def read_envelope(
    body: bytes, header_length: str | None, spec: InputSpec, max_rows: int
) -> Envelope:
    """The body's JSON header as an InferenceRequest, and the binary data after it (whose
    start the Inference-Header-Content-Length header gives; None: the body is all JSON),
    for a model taking `spec` in at most `max_rows` rows."""
    header, blob = binary.split(body, header_length)
    check_json_size(header, spec, max_rows, "the request's JSON")
    try:  # orjson: ~13x json.loads on a request of 3072 floats; also refuses depth > 1024
        raw = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        hint = ""
        if header_length is None and "UTF-8" in str(exc):
            hint = f" (binary tensor data after the JSON? send the {binary.HEADER_LENGTH} header)"
        elif b"NaN" in header or b"Infinity" in header:
            hint = " (NaN and Infinity are not JSON; expected finite pixel values)"
        raise MalformedJSON(f"{exc}{hint}") from None
    return Envelope(InferenceRequest.model_validate(raw), blob)


def decode_inputs(envelope: Envelope, spec: InputSpec, max_rows: int) -> ParsedRequest:
    """The request's one input tensor as a float32 batch for a model taking `spec`, at most
    `max_rows` rows, and the answer's options; BadRequest or PayloadTooLarge saying what
    was expected otherwise."""
    req = envelope.request
    if len(req.inputs) != 1 or req.inputs[0].name != spec.name:
        got = ", ".join(repr(i.name) for i in req.inputs) or "none"
        want = f"one input {spec.name!r} of FP32 {expected_shape(spec)}"
        raise BadRequest(f"expected {want}; got {got}")
    tensor = req.inputs[0]
    if tensor.datatype != "FP32":
        raise BadRequest(f"input {spec.name!r} must be FP32, got {tensor.datatype}")
    if len(tensor.shape) != 4 or tensor.shape[1:] != spec.shape[1:]:
        raise BadRequest(
            f"input {spec.name!r} has shape {tensor.shape}; expected {expected_shape(spec)}"
        )
    if tensor.shape[0] > max_rows:  # before the data: a shape may declare 2**62 rows
        raise PayloadTooLarge(
            f"input {spec.name!r} has {tensor.shape[0]} rows; at most {max_rows} per request"
        )
    values = _values(tensor, envelope.blob, spec.name)
    x = check_batch(
        values.astype(np.float32, copy=False).reshape(tensor.shape),
        spec,
        max_rows,
        f"input {spec.name!r}",
    )

    parameters = req.parameters or {}
    m = integral(parameters.get("m"))
    if m is not None and (isinstance(m, bool) or not isinstance(m, int)):
        raise BadRequest(f"parameter 'm' must be a whole number, got {m!r}")
    for output in req.outputs or []:
        if output.name not in OUTPUTS:
            raise BadRequest(f"unknown output {output.name!r}; outputs: {', '.join(OUTPUTS)}")
    all_binary = _flag(parameters, "binary_data_output")
    members = _flag(parameters, "members")
    return ParsedRequest(x, m, _outputs(req, members, all_binary), req.id)


def _values(tensor: RequestInput, blob: bytes, name: str) -> np.ndarray:
    """The tensor's values, flat: from the binary data or from `data`."""
    count = math.prod(tensor.shape)  # Python integers: no overflow
    size = integral((tensor.parameters or {}).get("binary_data_size"))
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int):
            raise BadRequest(f"binary_data_size must be a whole number of bytes, got {size!r}")
        if size != len(blob):
            raise BadRequest(
                f"binary_data_size {size} does not match the {len(blob)} bytes after the header"
            )
        if size != count * 4:
            raise BadRequest(
                f"input {name!r} of shape {tensor.shape} needs {count * 4} bytes of FP32, "
                f"got {size}"
            )
        if tensor.data is not None:
            raise BadRequest(f"input {name!r} has both data and binary_data_size; send one")
        return np.frombuffer(blob, dtype=DATATYPES["FP32"].newbyteorder("<"))
    if blob:
        raise BadRequest("binary data follows the header but no input declares binary_data_size")
    if tensor.data is None:
        raise BadRequest(f"input {name!r} has neither data nor binary_data_size")
    try:
        values = np.asarray(tensor.data).reshape(-1)
    except (ValueError, TypeError):
        values = np.asarray([], dtype=object)
    if values.dtype.kind not in "iuf":  # booleans, strings, ints beyond int64, ragged
        raise BadRequest(f"input {name!r}: data must be numbers, as a flat or nested list")
    if values.size != count:
        raise BadRequest(
            f"input {name!r} of shape {tensor.shape} needs {count} values, got {values.size}"
        )
    return values


def _flag(parameters: dict[str, Any], key: str) -> bool:
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise BadRequest(f"parameter {key!r} must be true or false, got {value!r}")
    return value


def _outputs(req: InferenceRequest, members: bool, all_binary: bool) -> tuple[OutputRequest, ...]:
    """The outputs asked for (by default every figure, and the members' with `members`)."""
    if not req.outputs:
        names = OUTPUTS if members else DEFAULT_OUTPUTS
        return tuple(OutputRequest(name, all_binary) for name in names)
    wanted = []
    asked = [output.name for output in req.outputs]
    if len(set(asked)) < len(asked):
        twice = sorted({n for n in asked if asked.count(n) > 1})
        raise BadRequest(f"outputs requested more than once: {', '.join(twice)}")
    for output in req.outputs:
        params = output.parameters or {}
        k = integral(params.get("classification"))
        if k is not None and (
            output.name != "probabilities" or isinstance(k, bool) or not isinstance(k, int) or k < 1
        ):
            raise BadRequest(
                "classification takes a whole number k >= 1, on output 'probabilities'"
            )
        binary_data = params.get("binary_data", all_binary)
        if not isinstance(binary_data, bool):
            raise BadRequest(
                f"output {output.name!r}: parameter 'binary_data' must be true or false, "
                f"got {binary_data!r}"
            )
        wanted.append(OutputRequest(output.name, binary_data, k))
    return tuple(wanted)


# Encoding ------------------------------------------------------------------------------


def encode_answer(model_name: str, parsed: ParsedRequest, answer: Answer) -> EncodedResponse:
    """The answer to `parsed` as the response body: JSON, or JSON then binary data when an
    output is asked for as binary. The JSON header is built as plain data and written by
    orjson, in InferenceResponse's field order and without its empty fields: everything in
    it comes from the answer and from options checked while decoding, so validating it
    again per request would only cost time (the fuzz tests check it against the schema)."""
    outputs, blobs = [], []
    for wanted in parsed.outputs:
        array, datatype = _output_array(wanted.name, answer)
        if wanted.classification is not None:
            k = min(wanted.classification, len(answer.classes))
            array, datatype = _classification(array, k, answer.classes), "BYTES"
        out: dict[str, Any] = {
            "name": wanted.name,
            "shape": list(array.shape),
            "datatype": datatype,
        }
        if wanted.binary:
            data = binary.serialize(array, datatype)
            out["parameters"] = {"binary_data_size": len(data)}
            blobs.append(data)
        else:
            out["data"] = (
                [v.decode() for v in array.reshape(-1)]
                if datatype == "BYTES"
                else array.reshape(-1).tolist()
            )
        outputs.append(out)
    response: dict[str, Any] = {"model_name": model_name, "model_version": MODEL_VERSION}
    if parsed.id is not None:
        response["id"] = parsed.id
    response["parameters"] = {"m": len(answer.members), "snapshots": answer.members}
    response["outputs"] = outputs
    header = orjson.dumps(response)
    if not blobs:
        return EncodedResponse(header, JSON_MEDIA_TYPE, {})
    return EncodedResponse(
        header + b"".join(blobs), BINARY_MEDIA_TYPE, {binary.HEADER_LENGTH: str(len(header))}
    )


def _output_array(name: str, answer: Answer) -> tuple[np.ndarray, str]:
    result = answer.result
    if name == "probabilities":
        return result.probabilities.astype(np.float32), "FP32"
    if name == "label":
        return result.label.astype(np.int64), "INT64"
    if name == "class_name":
        return np.array([answer.classes[i].encode() for i in result.label], dtype=object), "BYTES"
    if name == "member_probabilities":
        return answer.member_probs.astype(np.float32), "FP32"
    if name == "member_labels":
        return result.member_labels.astype(np.int64), "INT64"
    return getattr(result, name).astype(np.float32), "FP32"


def _classification(probabilities: np.ndarray, k: int, classes: list[str]) -> np.ndarray:
    """Triton's classification extension: the top k as b"score:index:label"."""
    top = np.argsort(-probabilities, axis=-1, kind="stable")[:, :k]
    return np.array(
        [
            [f"{probabilities[n, i]:f}:{i}:{classes[i]}".encode() for i in row]
            for n, row in enumerate(top)
        ],
        dtype=object,
    )


def model_metadata(
    name: str, runtime: EnsembleRuntime | None, described: dict[str, Any]
) -> ModelMetadataResponse:
    """A model's metadata: its input and outputs as the serving set has them (-1 for what
    is not known before a set has loaded) and `described`, the model's own account."""
    inputs = []
    parameters = dict(described)
    if runtime is not None:
        spec = runtime.manifest.input
        inputs = [TensorMetadata(name=spec.name, datatype="FP32", shape=spec.shape)]
        parameters |= {
            "classes": runtime.manifest.classes,
            "pixel_range": list(spec.pixel_range),
            "color_mode": spec.color_mode,
            "layout": spec.layout,
        }
    return ModelMetadataResponse(
        name=name,
        versions=[MODEL_VERSION],
        platform=PLATFORM,
        inputs=inputs,
        outputs=output_metadata(runtime),
        parameters=parameters,
    )


def output_metadata(runtime: EnsembleRuntime | None) -> list[TensorMetadata]:
    classes = len(runtime.manifest.classes) if runtime else -1
    m = runtime.m if runtime else -1
    shapes = {
        "probabilities": [-1, classes],
        "member_probabilities": [m, -1, classes],
        "member_labels": [m, -1],
    }
    types = {"label": "INT64", "member_labels": "INT64", "class_name": "BYTES"}
    return [
        TensorMetadata(name=name, datatype=types.get(name, "FP32"), shape=shapes.get(name, [-1]))
        for name in OUTPUTS
    ]
