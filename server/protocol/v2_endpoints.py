"""Open Inference Protocol (KServe v2) routes, with JSON tensors and the binary tensor
extension, so stock clients (tritonclient.http, KServe clients) work unchanged."""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from server import __version__
from server.errors import (
    INPUT_ERRORS,
    LOOKUP_ERRORS,
    BadRequest,
    NotFound,
    NotReady,
    PayloadTooLarge,
    UnsupportedMediaType,
    client_input,
)
from server.model import Answer, ServedModel
from server.model_repository import ModelRepository
from server.protocol import binary
from server.protocol.docs import ref
from server.protocol.tensors import DATATYPES, check_batch, expected_shape
from server.protocol.v2_models import (
    InferenceRequest,
    InferenceResponse,
    LiveResponse,
    ModelMetadataResponse,
    ReadyResponse,
    RepositoryIndexEntry,
    ResponseOutput,
    ServerMetadataResponse,
    TensorMetadata,
)
from snapens.ensemble import DISAGREEMENT_FIGURES

MODEL_VERSION = "1"
PLATFORM = "onnxruntime_onnx"
MEMBER_OUTPUTS = ("member_probabilities", "member_labels")
DEFAULT_OUTPUTS = ("probabilities", "label", "class_name", "confidence", *DISAGREEMENT_FIGURES)
OUTPUTS = (*DEFAULT_OUTPUTS, *MEMBER_OUTPUTS)


def repository(request: Request) -> ModelRepository:
    repo: ModelRepository = request.app.state.repository
    return repo


def _model(request: Request, name: str, version: str | None) -> ServedModel:
    model = repository(request).get(name)
    if version is not None and version != MODEL_VERSION:
        raise NotFound(f"model {name!r} has no version {version!r} (versions: {MODEL_VERSION})")
    return model


def output_metadata(model: ServedModel) -> list[TensorMetadata]:
    classes = len(model.runtime.manifest.classes) if model.runtime else -1
    m = model.runtime.m if model.runtime else -1
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


# Request decoding ----------------------------------------------------------------------


async def read_body(request: Request) -> bytes:
    """The request body, inflated if the client compressed it (as tritonclient can)."""
    body = await request.body()
    encoding = request.headers.get("content-encoding", "identity").lower()
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r}: expected gzip, deflate or none")
    limit = request.app.state.settings.max_body_bytes
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"the body is not valid {encoding} data: {exc}") from None
    if len(data) > limit:
        raise PayloadTooLarge(f"the inflated body exceeds the limit of {limit} bytes")
    return data


@dataclass(frozen=True)
class ParsedRequest:
    request: InferenceRequest
    x: np.ndarray
    m: int | None
    members: bool


def _flag(parameters: dict[str, Any], key: str) -> bool:
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise BadRequest(f"parameter {key!r} must be true or false, got {value!r}")
    return value


def parse_infer(
    model: ServedModel, body: bytes, header_length: str | None, max_rows: int
) -> ParsedRequest:
    """The request as the model's input batch and the answer's options. Runs inside
    `client_input`, so any failure here is the client's: a 4xx, never a 5xx."""
    with client_input("request"):
        return _parse_infer(model, body, header_length, max_rows)


def _parse_infer(
    model: ServedModel, body: bytes, header_length: str | None, max_rows: int
) -> ParsedRequest:
    header, blob = binary.split(body, header_length)
    try:
        raw = json.loads(header)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    except ValueError as exc:  # e.g. an integer literal of more digits than Python converts
        raise BadRequest(f"malformed JSON: {exc}") from None
    req = InferenceRequest.model_validate(raw)

    runtime = model.runtime
    if runtime is None:
        raise NotReady(f"model {model.name!r} is not ready")
    spec = runtime.manifest.input
    want = f"one input {spec.name!r} of FP32 {expected_shape(spec)}"
    if len(req.inputs) != 1 or req.inputs[0].name != spec.name:
        got = ", ".join(repr(i.name) for i in req.inputs) or "none"
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
    count = math.prod(tensor.shape)  # Python integers: no overflow
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int):
            raise BadRequest(f"binary_data_size must be a whole number of bytes, got {size!r}")
        if size != len(blob):
            raise BadRequest(
                f"binary_data_size {size} does not match the {len(blob)} bytes after the header"
            )
        if size != count * 4:
            raise BadRequest(
                f"input {spec.name!r} of shape {tensor.shape} needs {count * 4} bytes of FP32, "
                f"got {size}"
            )
        values = np.frombuffer(blob, dtype=DATATYPES["FP32"].newbyteorder("<"))
    else:
        if blob:
            raise BadRequest(
                "binary data follows the header but no input declares binary_data_size"
            )
        if tensor.data is None:
            raise BadRequest(f"input {spec.name!r} has neither data nor binary_data_size")
        try:
            values = np.asarray(tensor.data).reshape(-1)
        except (ValueError, TypeError):
            values = np.asarray([], dtype=object)
        if values.dtype.kind not in "iuf":  # booleans, strings, ints beyond int64, ragged
            raise BadRequest(f"input {spec.name!r}: data must be numbers, as a flat or nested list")
        if values.size != count:
            raise BadRequest(
                f"input {spec.name!r} of shape {tensor.shape} needs {count} values, "
                f"got {values.size}"
            )
    x = check_batch(
        values.astype(np.float32, copy=False).reshape(tensor.shape),
        spec,
        max_rows,
        f"input {spec.name!r}",
    )

    parameters = req.parameters or {}
    m = parameters.get("m")
    if m is not None and (isinstance(m, bool) or not isinstance(m, int)):
        raise BadRequest(f"parameter 'm' must be a whole number, got {m!r}")
    for output in req.outputs or []:
        if output.name not in OUTPUTS:
            raise BadRequest(f"unknown output {output.name!r}; outputs: {', '.join(OUTPUTS)}")
    _flag(parameters, "binary_data_output")
    return ParsedRequest(req, x, m, _flag(parameters, "members"))


# Response encoding ---------------------------------------------------------------------


def _output_array(name: str, answer: Answer, classes: list[str]) -> tuple[np.ndarray, str]:
    result = answer.result
    if name == "probabilities":
        return result.probabilities.astype(np.float32), "FP32"
    if name == "label":
        return result.label.astype(np.int64), "INT64"
    if name == "class_name":
        return np.array([classes[i].encode() for i in result.label], dtype=object), "BYTES"
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


def encode_answer(model_name: str, parsed: ParsedRequest, answer: Answer) -> Response:
    req = parsed.request
    classes = answer.runtime.manifest.classes
    all_binary = bool((req.parameters or {}).get("binary_data_output", False))
    if req.outputs:
        wanted = [(o.name, o.parameters or {}) for o in req.outputs]
    else:
        names = OUTPUTS if parsed.members else DEFAULT_OUTPUTS
        wanted = [(name, {}) for name in names]
    outputs, blobs = [], []
    for name, params in wanted:
        array, datatype = _output_array(name, answer, classes)
        k = params.get("classification")
        if k is not None:
            if name != "probabilities" or isinstance(k, bool) or not isinstance(k, int) or k < 1:
                raise BadRequest(
                    "classification takes a whole number k >= 1, on output 'probabilities'"
                )
            array, datatype = _classification(array, min(k, len(classes)), classes), "BYTES"
        as_binary = params.get("binary_data", all_binary)
        out = ResponseOutput(name=name, shape=list(array.shape), datatype=datatype)
        if as_binary:
            data = binary.serialize(array, datatype)
            out.parameters = {"binary_data_size": len(data)}
            blobs.append(data)
        else:
            out.data = (
                [v.decode() for v in array.reshape(-1)]
                if datatype == "BYTES"
                else array.reshape(-1).tolist()
            )
        outputs.append(out)
    response = InferenceResponse(
        model_name=model_name,
        model_version=MODEL_VERSION,
        id=req.id,
        outputs=outputs,
        parameters={"m": len(answer.members), "snapshots": answer.members},
    )
    header = response.model_dump_json(exclude_none=True).encode()
    if not blobs:
        return Response(header, media_type="application/json")
    return Response(
        header + b"".join(blobs),
        media_type="application/octet-stream",
        headers={binary.HEADER_LENGTH: str(len(header))},
    )


# Routes --------------------------------------------------------------------------------

health = APIRouter(tags=["v2 health"])
router = APIRouter(tags=["v2 inference"])


@router.get("/v2", response_model=ServerMetadataResponse)
async def server_metadata() -> ServerMetadataResponse:
    return ServerMetadataResponse(
        name="snapens",
        version=__version__,
        extensions=["binary_tensor_data", "classification", "model_repository"],
    )


@health.get("/v2/health/live", response_model=LiveResponse)
async def live() -> LiveResponse:
    return LiveResponse(live=True)


@health.get(
    "/v2/health/ready",
    response_model=ReadyResponse,
    responses={503: {"model": ReadyResponse, "description": "No model is ready yet"}},
)
async def ready(request: Request) -> JSONResponse:
    is_ready = repository(request).ready
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


async def _metadata(request: Request, name: str, version: str | None) -> ModelMetadataResponse:
    model = _model(request, name, version)
    runtime = model.runtime
    inputs = []
    if runtime is not None:
        spec = runtime.manifest.input
        inputs = [TensorMetadata(name=spec.name, datatype="FP32", shape=spec.shape)]
    parameters: dict[str, Any] = model.describe()
    if runtime is not None:
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
        outputs=output_metadata(model),
        parameters=parameters,
    )


@router.get("/v2/models/{name}", response_model=ModelMetadataResponse, responses=LOOKUP_ERRORS)
async def model_metadata(request: Request, name: str) -> ModelMetadataResponse:
    return await _metadata(request, name, None)


@router.get(
    "/v2/models/{name}/versions/{version}",
    response_model=ModelMetadataResponse,
    responses=LOOKUP_ERRORS,
)
async def model_version_metadata(
    request: Request, name: str, version: str
) -> ModelMetadataResponse:
    return await _metadata(request, name, version)


MODEL_READY: dict[int | str, dict[str, Any]] = {
    **LOOKUP_ERRORS,
    503: {"model": ReadyResponse, "description": "The model is not ready"},
}


async def _ready(request: Request, name: str, version: str | None) -> JSONResponse:
    model = _model(request, name, version)
    return JSONResponse(
        {"name": name, "ready": model.ready}, status_code=200 if model.ready else 503
    )


@router.get("/v2/models/{name}/ready", response_model=ReadyResponse, responses=MODEL_READY)
async def model_ready(request: Request, name: str) -> JSONResponse:
    return await _ready(request, name, None)


@router.get(
    "/v2/models/{name}/versions/{version}/ready",
    response_model=ReadyResponse,
    responses=MODEL_READY,
)
async def model_version_ready(request: Request, name: str, version: str) -> JSONResponse:
    return await _ready(request, name, version)


INFER_DOC: dict[str, Any] = {
    "requestBody": {
        "content": {
            "application/json": {"schema": ref(InferenceRequest)},
            "application/octet-stream": {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "minLength": 1,
                    "description": "JSON header of Inference-Header-Content-Length bytes, then "
                    "the binary tensor data",
                }
            },
        },
        "required": True,
    },
}


async def _infer(request: Request, name: str, version: str | None) -> Response:
    model = _model(request, name, version)
    settings = request.app.state.settings
    body = await read_body(request)
    parsed = parse_infer(
        model, body, request.headers.get(binary.HEADER_LENGTH), settings.max_request_batch
    )
    answer = await model.predict(parsed.x, parsed.m)
    return encode_answer(name, parsed, answer)


@router.post(
    "/v2/models/{name}/infer",
    response_model=InferenceResponse,
    openapi_extra=INFER_DOC,
    responses=INPUT_ERRORS,
)
async def infer(request: Request, name: str) -> Response:
    return await _infer(request, name, None)


@router.post(
    "/v2/models/{name}/versions/{version}/infer",
    response_model=InferenceResponse,
    openapi_extra=INFER_DOC,
    responses=INPUT_ERRORS,
)
async def infer_version(request: Request, name: str, version: str) -> Response:
    return await _infer(request, name, version)


@router.post("/v2/repository/index", response_model=list[RepositoryIndexEntry])
async def repository_index(request: Request) -> list[RepositoryIndexEntry]:
    repo = repository(request)
    entries = []
    for name, model in repo.models.items():
        failed = model.last_load.status == "failed"
        entries.append(
            RepositoryIndexEntry(
                name=name,
                version=MODEL_VERSION,
                state="READY" if model.ready else ("UNAVAILABLE" if failed else "LOADING"),
                reason=model.last_load.error if failed else None,
            )
        )
    return entries


@router.post(
    "/v2/repository/models/{name}/load", responses={**LOOKUP_ERRORS, 400: INPUT_ERRORS[400]}
)
async def load_model(request: Request, name: str) -> JSONResponse:
    """Load the model's current last-m snapshot set now and swap it in. If the new set fails
    its checks the previous set keeps serving and the answer says why."""
    model = await repository(request).load(name)
    if model.last_load.status != "loaded":
        raise BadRequest(f"model {name!r} was not reloaded: {model.last_load.error}")
    return JSONResponse(
        {"name": name, "loaded": True, **model.last_load.model_dump(exclude_none=True)}
    )
