"""The FastAPI application: routes per protocol, one error handler set, the repository
loaded in the background at start so liveness answers at once and readiness follows."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from server import __version__
from server.auth import ApiKeyMiddleware
from server.board import ProcessBoard
from server.decoding import ImageDecoder
from server.errors import install_handlers
from server.metrics import Metrics
from server.middleware import BodyBudget, BodyPace, RequestContext
from server.model_repository import ModelRepository
from server.protocol import demo_endpoints, v1_endpoints, v2_endpoints
from server.protocol.docs import install_docs
from server.protocol.v2_fast_path import V2InferFastPath
from server.protocol.v2_models import InferenceRequest
from server.settings import ServerSettings

log = logging.getLogger("snapens.server")


def create_app(
    settings: ServerSettings, board: ProcessBoard | None = None, answer_while_loading: bool = True
) -> FastAPI:
    """The app of one server process; `board`: that of the --workers processes sharing the
    machine, where there are several. A process that does not answer while loading takes
    no connection before its repository's first load is done (with several processes, all
    but the first: none of them answers 503 while another is ready)."""
    metrics = Metrics(multiprocess=settings.workers > 1)
    repository = ModelRepository(settings, metrics, board)
    decoder = ImageDecoder(settings.decode_workers, settings.max_image_pixels)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = None
        if answer_while_loading:
            loop = asyncio.get_running_loop()
            loading = loop.create_task(repository.start(), name="initial-load")
        else:
            await repository.start()  # uvicorn listens once the startup is done
        try:
            yield
        finally:
            if loading is not None and not loading.done():
                loading.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loading
            await repository.close()
            decoder.close()
            log.info("stopped")

    app = FastAPI(
        title="snapens",
        version=__version__,
        summary="A snapshot ensemble server: averaged softmax of the last m snapshots, "
        "with how much they disagree.",
        lifespan=lifespan,
        openapi_url=None,  # served by install_docs, as a route the metrics can name
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.repository = repository
    app.state.metrics = metrics
    app.state.decoder = decoder
    install_handlers(app)
    app.include_router(v2_endpoints.health)
    app.include_router(v2_endpoints.router)
    app.include_router(v1_endpoints.router)
    app.include_router(demo_endpoints.router)
    install_docs(app, [InferenceRequest])

    @app.get("/metrics", include_in_schema=False)
    async def prometheus(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    # Innermost: the hot route answered without FastAPI's routing, inside the key check and
    # the request middleware.
    app.add_middleware(V2InferFastPath, repository=repository, settings=settings)
    if settings.api_key is not None:
        app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key.get_secret_value())
    # Each process holds its share of the bodies in flight (at least one of the largest).
    share = max(settings.max_body_bytes, settings.max_body_bytes_in_flight // settings.workers)
    budget = BodyBudget(share, metrics.body_bytes_in_flight)
    # Added last, so it runs first: every response, a 401 included, is counted and logged.
    app.add_middleware(
        RequestContext,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        pace=BodyPace(settings.body_timeout_s, settings.min_body_rate, settings.body_rate_grace_s),
        budget=budget,
    )
    return app
