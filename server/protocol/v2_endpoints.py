"""Open Inference Protocol (KServe v2) routes, with JSON tensors and the binary tensor
extension, so stock clients (tritonclient.http, KServe clients) work unchanged.

Each route is thin: look the model up, decode what was sent (server.protocol.v2_codec,
inside `client_input`, so any failure is a 4xx), ask the model, encode its answer. The
infer routes are answered before FastAPI by server.protocol.v2_fast_path, which they share
their code with."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from server import __version__
from server.errors import INPUT_ERRORS, LOOKUP_ERRORS, BadRequest
from server.model_repository import ModelRepository
from server.protocol import binary, v2_codec, v2_fast_path
from server.protocol.dependencies import Repository, Settings
from server.protocol.docs import ref
from server.protocol.v2_codec import MODEL_VERSION
from server.protocol.v2_fast_path import served_model
from server.protocol.v2_models import (
    InferenceRequest,
    InferenceResponse,
    LiveResponse,
    ModelMetadataResponse,
    ReadyResponse,
    RepositoryIndexEntry,
    ServerMetadataResponse,
)
from server.settings import ServerSettings

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
async def ready(repository: Repository) -> JSONResponse:
    is_ready = repository.ready
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


# HEAD too, for probes and load balancers that ask with it: the status without a body
# (as the same routes, left out of the OpenAPI document, which would list them twice).
health.add_api_route("/v2/health/live", live, methods=["HEAD"], include_in_schema=False)
health.add_api_route("/v2/health/ready", ready, methods=["HEAD"], include_in_schema=False)


def _metadata(repository: ModelRepository, name: str, version: str | None) -> ModelMetadataResponse:
    model = served_model(repository, name, version)
    return v2_codec.model_metadata(name, model.runtime, model.describe())


@router.get("/v2/models/{name}", response_model=ModelMetadataResponse, responses=LOOKUP_ERRORS)
async def model_metadata(repository: Repository, name: str) -> ModelMetadataResponse:
    return _metadata(repository, name, None)


@router.get(
    "/v2/models/{name}/versions/{version}",
    response_model=ModelMetadataResponse,
    responses=LOOKUP_ERRORS,
)
async def model_version_metadata(
    repository: Repository, name: str, version: str
) -> ModelMetadataResponse:
    return _metadata(repository, name, version)


MODEL_READY: dict[int | str, dict[str, Any]] = {
    **LOOKUP_ERRORS,
    503: {"model": ReadyResponse, "description": "The model is not ready"},
}


def _ready(repository: ModelRepository, name: str, version: str | None) -> JSONResponse:
    model = served_model(repository, name, version)
    return JSONResponse(
        {"name": name, "ready": model.ready}, status_code=200 if model.ready else 503
    )


@router.get("/v2/models/{name}/ready", response_model=ReadyResponse, responses=MODEL_READY)
async def model_ready(repository: Repository, name: str) -> JSONResponse:
    return _ready(repository, name, None)


@router.get(
    "/v2/models/{name}/versions/{version}/ready",
    response_model=ReadyResponse,
    responses=MODEL_READY,
)
async def model_version_ready(repository: Repository, name: str, version: str) -> JSONResponse:
    return _ready(repository, name, version)


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


async def _infer(
    request: Request,
    repository: ModelRepository,
    settings: ServerSettings,
    name: str,
    version: str | None,
) -> Response:
    """The same as server.protocol.v2_fast_path, which answers these requests before they
    reach FastAPI; the routes stay for the OpenAPI document."""
    headers = request.headers
    encoded = await v2_fast_path.infer(
        repository,
        settings,
        name,
        version,
        await request.body(),
        headers.get(binary.HEADER_LENGTH),
        headers.get("content-encoding"),
    )
    return Response(encoded.body, media_type=encoded.media_type, headers=encoded.headers)


@router.post(
    "/v2/models/{name}/infer",
    response_model=InferenceResponse,
    openapi_extra=INFER_DOC,
    responses=INPUT_ERRORS,
)
async def infer(
    request: Request, repository: Repository, settings: Settings, name: str
) -> Response:
    return await _infer(request, repository, settings, name, None)


@router.post(
    "/v2/models/{name}/versions/{version}/infer",
    response_model=InferenceResponse,
    openapi_extra=INFER_DOC,
    responses=INPUT_ERRORS,
)
async def infer_version(
    request: Request, repository: Repository, settings: Settings, name: str, version: str
) -> Response:
    return await _infer(request, repository, settings, name, version)


@router.post("/v2/repository/index", response_model=list[RepositoryIndexEntry])
async def repository_index(repository: Repository) -> list[RepositoryIndexEntry]:
    entries = []
    for name, model in repository.models.items():
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
async def load_model(repository: Repository, name: str) -> JSONResponse:
    """Load the model's current last-m snapshot set now and swap it in. If the new set fails
    its checks the previous set keeps serving and the answer says why."""
    model = await repository.load(name)
    if model.last_load.status != "loaded":
        raise BadRequest(f"model {name!r} was not reloaded: {model.last_load.error}")
    return JSONResponse(
        {"name": name, "loaded": True, **model.last_load.model_dump(exclude_none=True)}
    )
