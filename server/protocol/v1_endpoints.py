"""A friendly JSON API in the KServe v1 style: `{"instances": [...]}` in,
`{"predictions": [...]}` out, each prediction with the ensemble's answer and how much
its snapshots disagree; plus image upload (PNG/JPEG)."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile

from server.errors import (
    INPUT_ERRORS,
    LOOKUP_ERRORS,
    BadRequest,
    NotReady,
    PayloadTooLarge,
    UnsupportedMediaType,
    client_input,
)
from server.model import Answer, ServedModel
from server.model_repository import ModelRepository
from server.protocol.dependencies import Decoder, Repository, Settings
from server.protocol.tensors import check_batch
from snapens.manifest import InputSpec

router = APIRouter(tags=["v1"])


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instances: list[Any] = Field(
        min_length=1,
        description="images as nested lists shaped [C, H, W] (or [H, W] for one channel) of raw "
        'pixels in the model\'s pixel_range, or encoded images as {"b64": "<base64 PNG/JPEG>"}',
    )
    m: int | None = Field(None, ge=1, description="use the last m loaded snapshots")
    members: bool = Field(False, description="include each snapshot's label and probabilities")
    top_k: int | None = Field(
        None, ge=1, description="classes to list (default: the server's top_k)"
    )


class ClassScore(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    label: int
    class_name: str = Field(alias="class")
    probability: float


class MemberPrediction(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    cycle: int
    label: int
    class_name: str = Field(alias="class")
    probabilities: list[float]


class Prediction(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    label: int
    class_name: str = Field(alias="class")
    confidence: float
    top_k: list[ClassScore]
    vote_disagreement: float
    pairwise_disagreement: float
    predictive_entropy: float
    expected_entropy: float
    mutual_information: float
    member_std: float
    probabilities: list[float]
    members: list[MemberPrediction] | None = None


class PredictResponse(BaseModel):
    model_name: str
    m: int
    snapshots: list[int] = Field(description="cycles of the snapshots that answered")
    predictions: list[Prediction]


class ModelList(BaseModel):
    models: list[str]


class ModelStatus(BaseModel):
    name: str
    ready: bool


def _ready_model(repository: ModelRepository, name: str) -> tuple[ServedModel, InputSpec]:
    model = repository.get(name)
    if model.runtime is None:
        raise NotReady(f"model {name!r} is not ready")
    return model, model.runtime.manifest.input


def _b64_image(instance: dict[str, Any], what: str) -> bytes:
    if set(instance) != {"b64"} or not isinstance(instance["b64"], str):
        raise BadRequest(f'{what}: expected {{"b64": "<base64 image>"}} or a nested list of pixels')
    try:
        return base64.b64decode(instance["b64"], validate=True)
    except binascii.Error:
        raise BadRequest(f"{what}: b64 is not valid base64") from None


def _pixel_row(instance: Any, what: str, spec: InputSpec) -> np.ndarray:
    want = f"numbers in a nested list shaped {spec.shape[1:]}"
    row = np.asarray(instance)  # ragged or too-deep lists raise: the caller makes that a 400
    if row.dtype.kind not in "iuf":  # booleans, strings, objects (an int too large for int64)
        raise BadRequest(f"{what}: expected {want}")
    if row.ndim == 2 and spec.channels == 1:
        row = row[None]
    if list(row.shape) != spec.shape[1:]:
        raise BadRequest(f"{what} has shape {list(row.shape)}; expected {spec.shape[1:]} (C, H, W)")
    return row.astype(np.float64)


def format_predictions(answer: Answer, top_k: int, members: bool) -> list[Prediction]:
    result = answer.result
    classes = answer.runtime.manifest.classes
    k = min(top_k, len(classes))
    order = np.argsort(-result.probabilities, axis=-1, kind="stable")[:, :k]
    predictions = []
    for n in range(len(result.label)):
        label = int(result.label[n])
        figures = {name: float(value[n]) for name, value in result.figures().items()}
        member_rows = None
        if members:
            member_rows = [
                MemberPrediction(
                    cycle=cycle,
                    label=int(result.member_labels[i, n]),
                    class_name=classes[int(result.member_labels[i, n])],
                    probabilities=answer.member_probs[i, n].tolist(),
                )
                for i, cycle in enumerate(answer.members)
            ]
        predictions.append(
            Prediction(
                label=label,
                class_name=classes[label],
                confidence=float(result.confidence[n]),
                top_k=[
                    ClassScore(
                        label=int(c),
                        class_name=classes[int(c)],
                        probability=float(result.probabilities[n, c]),
                    )
                    for c in order[n]
                ],
                probabilities=result.probabilities[n].tolist(),
                members=member_rows,
                **figures,
            )
        )
    return predictions


async def _answer(
    settings: Settings,
    model: ServedModel,
    x: np.ndarray,
    m: int | None,
    members: bool,
    top_k: int | None,
) -> PredictResponse:
    answer = await model.predict(x, m)
    k = top_k or settings.top_k
    return PredictResponse(
        model_name=model.name,
        m=len(answer.members),
        snapshots=answer.members,
        predictions=format_predictions(answer, k, members),
    )


@router.get("/v1/models", response_model=ModelList)
async def list_models(repository: Repository) -> ModelList:
    return ModelList(models=sorted(repository.models))


@router.post(
    "/v1/models/{name}:predict",
    response_model=PredictResponse,
    response_model_by_alias=True,
    response_model_exclude_none=True,
    responses=INPUT_ERRORS,
)
async def predict(
    repository: Repository, settings: Settings, decoder: Decoder, name: str, body: PredictRequest
) -> PredictResponse:
    model, spec = _ready_model(repository, name)
    limit = settings.max_request_batch
    with client_input("instances"):
        if len(body.instances) > limit:
            check_batch(np.zeros((len(body.instances), *spec.shape[1:])), spec, limit, "instances")
        images = {
            i: _b64_image(instance, f"instance {i}")
            for i, instance in enumerate(body.instances)
            if isinstance(instance, dict)
        }
        rows = {
            i: _pixel_row(instance, f"instance {i}", spec)
            for i, instance in enumerate(body.instances)
            if i not in images
        }
    if images:
        decoded = await decoder.rows([(f"instance {i}", data) for i, data in images.items()], spec)
        rows |= dict(zip(images, decoded, strict=True))
    with client_input("instances"):
        x = check_batch(np.stack([rows[i] for i in range(len(rows))]), spec, limit, "instances")
    return await _answer(settings, model, x, body.m, body.members, body.top_k)


@router.post(
    "/v1/models/{name}/images:predict",
    response_model=PredictResponse,
    response_model_by_alias=True,
    response_model_exclude_none=True,
    openapi_extra={
        "requestBody": {
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "file": {
                                "type": "array",
                                "items": {"type": "string", "format": "binary"},
                                "minItems": 1,
                            }
                        },
                        "required": ["file"],
                    }
                },
                "image/png": {"schema": {"type": "string", "format": "binary", "minLength": 1}},
                "image/jpeg": {"schema": {"type": "string", "format": "binary", "minLength": 1}},
            },
            "required": True,
        }
    },
    responses=INPUT_ERRORS,
)
async def predict_images(
    request: Request,
    repository: Repository,
    settings: Settings,
    decoder: Decoder,
    name: str,
    m: int | None = Query(None, ge=1, description="use the last m loaded snapshots"),
    members: bool = Query(False, description="include each snapshot's label and probabilities"),
    top_k: int | None = Query(None, ge=1),
) -> PredictResponse:
    """Upload one or more images (multipart form fields, or one raw image body); each is
    decoded with Pillow, off the event loop, and resized to the model's input as its
    manifest describes."""
    model, spec = _ready_model(repository, name)
    limit = settings.max_request_batch
    content_type = request.headers.get("content-type", "")
    images: list[tuple[str, bytes]] = []
    if content_type.startswith("multipart/form-data"):
        async with request.form(max_files=limit, max_fields=limit) as form:
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    images.append((f"image {value.filename or key!r}", await value.read()))
    elif content_type.startswith("image/"):
        images.append(("the body", await request.body()))
    else:
        raise UnsupportedMediaType(
            f"Content-Type {content_type or 'none'!r}: expected multipart/form-data with image "
            "files, or image/png or image/jpeg"
        )
    if not images:
        raise BadRequest("no image in the request; attach files as multipart form fields")
    if len(images) > limit:
        raise PayloadTooLarge(f"images has {len(images)} rows; at most {limit} per request")
    x = await decoder.rows(images, spec, not_image_status=415)
    with client_input("images"):
        x = check_batch(x, spec, limit, "images")
    return await _answer(settings, model, x, m, members, top_k)


# Registered after the `{name}:predict` routes: a path such as /v1/models/x:predict also
# matches `{name}`, and a wrong method on it must be told `Allow: POST`, not `GET`.
@router.get("/v1/models/{name}", response_model=ModelStatus, responses=LOOKUP_ERRORS)
async def model_status(repository: Repository, name: str) -> ModelStatus:
    return ModelStatus(name=name, ready=repository.get(name).ready)
