"""Typed dependencies of the routes: what the app holds, as FastAPI injects it.

They are coroutines: FastAPI runs a plain `def` dependency on its thread pool, two thread
hand-offs per request for reading an attribute (measured: about a ninth of the event
loop's time at concurrency 32)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from server.decoding import ImageDecoder
from server.model_repository import ModelRepository
from server.settings import ServerSettings


async def get_settings(request: Request) -> ServerSettings:
    settings: ServerSettings = request.app.state.settings
    return settings


async def get_repository(request: Request) -> ModelRepository:
    repository: ModelRepository = request.app.state.repository
    return repository


async def get_decoder(request: Request) -> ImageDecoder:
    decoder: ImageDecoder = request.app.state.decoder
    return decoder


Settings = Annotated[ServerSettings, Depends(get_settings)]
Repository = Annotated[ModelRepository, Depends(get_repository)]
Decoder = Annotated[ImageDecoder, Depends(get_decoder)]
