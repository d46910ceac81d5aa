"""The OpenAPI document and the pages that show it.

The document is one a generator can use: every `$ref` resolves (the raw-body inference
routes describe their JSON with models kept in `components`), and every error answer is
documented with the `{"error": ...}` schema, the validation errors FastAPI documents as
422 included; every operation lists the 401 and 405 that any route can answer. Swagger UI
and ReDoc are served from the files the fastapi-offline package ships, so `/docs` works
without internet."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from pydantic import BaseModel

from server.errors import COMMON_ERRORS, ErrorResponse

ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
DOCS_PATHS = frozenset({"/docs", "/redoc", "/openapi.json", *(f"/docs/{name}" for name in ASSETS)})
SCHEMA_REF = "#/components/schemas/{model}"


def ref(model: type[BaseModel]) -> dict[str, str]:
    """A `$ref` to a model that `install_docs` places in the document's components."""
    return {"$ref": SCHEMA_REF.format(model=model.__name__)}


def _document(app: FastAPI, models: list[type[BaseModel]]) -> dict[str, Any]:
    document = get_openapi(
        title=app.title, version=app.version, summary=app.summary, routes=app.routes
    )
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    everything: list[type[BaseModel]] = [*models, ErrorResponse]
    for model in everything:
        schema = model.model_json_schema(ref_template=SCHEMA_REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    error = {"application/json": {"schema": ref(ErrorResponse)}}
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for status, common in COMMON_ERRORS.items():
                operation["responses"].setdefault(
                    str(status), {"description": common["description"]}
                )
            for status, response in operation.get("responses", {}).items():
                if status[0] in "45":
                    response["content"] = error
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return document


def install_docs(app: FastAPI, models: list[type[BaseModel]]) -> None:
    """`/openapi.json` with `models` (those routes reference by `ref()`) in its components,
    and `/docs` and `/redoc` with packaged assets. The app must be made with
    openapi_url=None, docs_url=None and redoc_url=None: FastAPI's own document route is a
    plain Starlette route, which leaves no route template for the request metrics."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document(app, models)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi_document() -> JSONResponse:
        return JSONResponse(openapi())

    static = resources.files("fastapi_offline") / "static"

    @app.get("/docs", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} API",
            swagger_js_url="/docs/swagger-ui-bundle.js",
            swagger_css_url="/docs/swagger-ui.css",
            swagger_favicon_url="/docs/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title=f"{app.title} API",
            redoc_js_url="/docs/redoc.standalone.js",
            redoc_favicon_url="/docs/favicon.png",
        )

    for name, media_type in ASSETS.items():
        app.add_api_route(
            f"/docs/{name}", _asset(str(static / name), media_type), include_in_schema=False
        )


def _asset(path: str, media_type: str) -> Callable[[], Awaitable[FileResponse]]:
    async def asset() -> FileResponse:
        return FileResponse(path, media_type=media_type, headers={"Cache-Control": "max-age=86400"})

    return asset
