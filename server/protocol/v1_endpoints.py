"""A friendly JSON API in the KServe v1 style: `{"instances": [...]}` in,
`{"predictions": [...]}` out, each prediction with the ensemble's answer and how much
its snapshots disagree; plus image upload (PNG, JPEG, BMP, GIF, WebP or TIFF).

Each route is thin: look the model up, decode what was sent (server.protocol.v1_codec,
inside `client_input`, so any failure is a 4xx; images decoded off the event loop by
server.decoding), ask the model, encode its answer."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query, Request
from starlette.datastructures import UploadFile

from server.errors import INPUT_ERRORS, LOOKUP_ERRORS, client_input
from server.model import ServedModel
from server.protocol import v1_codec
from server.protocol.compression import require_identity
from server.protocol.dependencies import Decoder, Repository, Settings
from server.protocol.json_route import OrjsonRoute
from server.protocol.tensors import check_batch
from server.protocol.v1_models import ModelList, ModelStatus, PredictRequest, PredictResponse
from server.runtime import Float32Array
from server.settings import ServerSettings

router = APIRouter(tags=["v1"], route_class=OrjsonRoute)


async def _answer(
    settings: ServerSettings,
    model: ServedModel,
    x: Float32Array,
    m: int | None,
    members: bool,
    top_k: int | None,
) -> PredictResponse:
    answer = await model.predict(x, m)
    return v1_codec.encode_predictions(model.name, answer, top_k or settings.top_k, members)


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
    model = repository.get(name)
    spec = model.input_spec()
    limit = settings.max_request_batch
    with client_input(v1_codec.WHAT):
        instances = v1_codec.decode_instances(body.instances, spec, limit)
    decoded = None
    if instances.images:
        decoded = await decoder.rows(instances.labelled_images(), spec)
    with client_input(v1_codec.WHAT):
        x = v1_codec.assemble(instances, decoded, spec, limit)
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
    model = repository.get(name)
    spec = model.input_spec()
    limit = settings.max_request_batch
    images: list[tuple[str, bytes]] = []
    content_type = request.headers.get("content-type", "")
    if v1_codec.upload_kind(content_type) == "multipart":
        require_identity(request.headers.get("content-encoding"), "a multipart upload")
        async with request.form(max_files=limit, max_fields=limit) as form:
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    images.append((f"image {value.filename or key!r}", await value.read()))
    else:
        images.append(("the body", await request.body()))
    v1_codec.check_uploads(images, limit, content_type)
    x = await decoder.rows(images, spec, not_image_status=415)
    with client_input("images"):
        x = check_batch(x, spec, limit, "images")
    return await _answer(settings, model, x, m, members, top_k)


# Registered after the `{name}:predict` routes: a path such as /v1/models/x:predict also
# matches `{name}`, and a wrong method on it must be told `Allow: POST`, not `GET`. For
# GET the router takes this route's full match over the predict route's method mismatch,
# so the route itself answers it.
@router.get("/v1/models/{name}", response_model=ModelStatus, responses=LOOKUP_ERRORS)
async def model_status(repository: Repository, name: str) -> ModelStatus:
    if name.endswith(":predict") and name not in repository.models:
        raise HTTPException(405, "Method Not Allowed", headers={"Allow": "POST"})
    return ModelStatus(name=name, ready=repository.get(name).ready)
