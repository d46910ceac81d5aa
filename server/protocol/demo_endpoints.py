"""The demo page at "/" and the read-only training-report route it shows plots from.

The page's own files hold no data, so they are public even when an API key is set
(server.auth lists them); the page asks for the key and sends it with every request."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Response
from fastapi.responses import FileResponse

from server.errors import NotFound
from server.protocol.dependencies import Repository
from snapens.report import REPORT_FILES

# The page refuses to load anything from elsewhere, and images only from itself or blobs.
PAGE_SECURITY = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "demo.js": "text/javascript; charset=utf-8",
    "demo.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
# The icon is also answered where browsers and tools look for one without being told.
FAVICON_PATH = "/favicon.ico"
PAGE_PATHS = frozenset(
    {"/", FAVICON_PATH, *(f"/demo/{name}" for name in ASSETS if name != "index.html")}
)
router = APIRouter(tags=["demo"])


def _asset(name: str) -> Response:
    data = resources.files("server.demo").joinpath(name).read_bytes()
    return Response(data, media_type=ASSETS[name], headers=PAGE_SECURITY)


@router.get("/", include_in_schema=False)
async def page() -> Response:
    return _asset("index.html")


@router.get(FAVICON_PATH, include_in_schema=False)
async def favicon() -> Response:
    return _asset("favicon.svg")


@router.get("/demo/{asset}", include_in_schema=False)
async def page_asset(asset: str) -> Response:
    if asset not in ASSETS or asset == "index.html":
        raise NotFound(f"no demo file {asset!r}")
    return _asset(asset)


@router.get(
    "/v1/models/{name}/report/{file}",
    response_class=FileResponse,
    responses={
        200: {
            "description": "the file",
            "content": {
                "image/png": {"schema": {"type": "string", "format": "binary"}},
                "application/json": {"schema": {"type": "object"}},
            },
        },
        404: {"description": "an unknown model, a name not listed, or a file not written"},
    },
)
async def report_file(repository: Repository, name: str, file: str) -> FileResponse:
    """A file of the model's training report, as the trainer wrote it beside the manifest:
    `report.json`, `learning_rate.png`, `ensemble_size.png` or `disagreement.png` (the
    last two only for ensembles of several snapshots). Read-only; no other file is served."""
    if file not in REPORT_FILES:
        raise NotFound(f"no report file {file!r}; report files: {', '.join(REPORT_FILES)}")
    path = repository.get(name).model_dir / file
    if not path.is_file():
        raise NotFound(f"model {name!r} has no {file} (its trainer did not write one)")
    return FileResponse(path, media_type=REPORT_FILES[file], headers={"Cache-Control": "no-cache"})
