"""Errors a client can cause, their HTTP status, how they are documented, and the handlers
that turn every error into `{"error": "..."}`.

Nothing a client sends may produce a 5xx. Two things make that a property of the code
rather than a list of patches: every route decodes what it was sent inside
`client_input()`, which turns *any* failure of parsing or validating into a 400; and the
request middleware (server.middleware) answers any other escaped exception once, logged
with the request id."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from snapens.validation import one_line

log = logging.getLogger("snapens.server")


class ServingError(Exception):
    status = 500
    headers: ClassVar[Mapping[str, str]] = MappingProxyType({})  # sent with the answer

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def response(self) -> JSONResponse:
        """The answer to this error: its status, headers and `{"error": message}`."""
        return error_response(self.status, self.message, self.headers or None)


class BadRequest(ServingError):
    """Malformed input: bad JSON, a wrong tensor name, shape, datatype or value."""

    status = 400


class MalformedJSON(BadRequest):
    """A body that is not JSON, in any protocol."""

    def __init__(self, detail: object) -> None:
        super().__init__(f"malformed JSON: {detail}")


class NotFound(ServingError):
    """An unknown model or version."""

    status = 404


class PayloadTooLarge(ServingError):
    """A body, a batch or an image over its limit."""

    status = 413


class UnsupportedMediaType(ServingError):
    status = 415


class Conflict(ServingError):
    """A request that was valid for the model when it arrived, but not for the snapshot
    set a reload swapped in while it waited (another input shape)."""

    status = 409


class NotReady(ServingError):
    """The model exists but has no loaded snapshot set yet."""

    status = 503


class Busy(ServingError):
    """The server holds as many request-body bytes as it may: no fault of the request,
    which may be sent again shortly."""

    status = 503
    headers = MappingProxyType({"Retry-After": "1"})


class ErrorResponse(BaseModel):
    """Every error answer: one line naming what was expected."""

    error: str


def _doc(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


# The statuses each kind of route can answer with, for the OpenAPI document.
LOOKUP_ERRORS: dict[int | str, dict[str, Any]] = {404: _doc("Unknown model or version")}
INPUT_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _doc("Malformed input: the message names what was expected"),
    404: _doc("Unknown model or version"),
    408: _doc("The request body stalled, or arrived slower than --min-body-rate"),
    409: _doc("A reload replaced the model's input shape while the request waited"),
    413: _doc("Body, batch or image over the server's limits"),
    415: _doc("Unsupported Content-Type or Content-Encoding"),
    422: _doc("The request does not match the schema"),
    503: _doc("The model is not ready"),
}
COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _doc("Missing or wrong API key (when the server has one)"),
    405: _doc("Method not allowed on this path (the Allow header lists those that are)"),
}


def _malformed_json(exc: RequestValidationError) -> str | None:
    """What the JSON parser said, where FastAPI could not parse a JSON body."""
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            return str(error.get("ctx", {}).get("error", "not valid JSON"))
    return None


def _request_errors(exc: RequestValidationError) -> str:
    """FastAPI's validation errors of a request as one line: where, then what."""
    parts = []
    for error in exc.errors()[:3]:
        loc = tuple(error["loc"])
        if loc == ("body",):
            return "the body must be a JSON object (Content-Type: application/json)"
        where = ".".join(str(p) for p in loc if p != "body") or "body"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts) or "invalid request"


@contextlib.contextmanager
def client_input(what: str) -> Iterator[None]:
    """Decode and validate what a client sent inside this block: a ServingError passes as
    it is, and any other failure (a ValueError from a parser, an OverflowError, a
    RecursionError from deep nesting, a MemoryError from an absurd shape...) becomes one
    400 naming `what`, so no input can reach a 5xx."""
    try:
        yield
    except ServingError:
        raise
    except ValidationError as exc:
        raise BadRequest(f"{what}: {one_line(exc, 'body')}") from None
    except RecursionError:
        raise BadRequest(f"{what}: nested too deeply") from None
    except MemoryError:
        raise PayloadTooLarge(f"{what}: too large to decode") from None
    except Exception as exc:
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise BadRequest(f"{what}: {detail}") from None


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServingError)
    async def serving_error(_: Request, exc: ServingError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        malformed = _malformed_json(exc)
        if malformed is not None:  # as the v2 codec answers it
            error = MalformedJSON(malformed)
            return error_response(error.status, error.message)
        return error_response(422, _request_errors(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = exc.headers  # as Starlette sets them
        if exc.status_code == 405 and headers and "GET" in headers.get("Allow", ""):
            # Starlette's Allow names the matched route's methods; HEAD is a route beside it.
            headers = {**headers, "Allow": _with_head(request, headers["Allow"])}
        return error_response(exc.status_code, str(exc.detail), headers)


def _with_head(request: Request, allow: str) -> str:
    """`allow` and HEAD, where a route answers HEAD at the request's path."""
    scope = {**request.scope, "method": "HEAD"}
    if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
        methods = [m.strip() for m in allow.split(",")]
        return ", ".join(sorted({*methods, "HEAD"}))
    return allow
