"""FastAPI routes whose JSON bodies are parsed with orjson, FastAPI's own body handling
and validation otherwise unchanged (FastAPI's documented custom Request / APIRoute
pattern).

The v1 API's body is nested lists of pixels: for one 3×32×32 image, json.loads takes
4–10 times as long as orjson (bench/v1_json.py). orjson also refuses nesting deeper than 1024 and
numbers beyond a double, as a JSONDecodeError that server.errors answers with a 400."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import orjson
from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute

from server.errors import ServingError
from server.protocol.compression import inflate
from server.protocol.tensors import check_json_size


@contextlib.contextmanager
def _as_http_exception() -> Iterator[None]:
    try:
        yield
    except ServingError as exc:
        raise HTTPException(exc.status, exc.message, dict(exc.headers) or None) from None


class OrjsonRequest(Request):
    """FastAPI answers any error raised while it reads a body, other than its own
    HTTPException, with a bare 400 "There was an error parsing the body": this server's
    errors (the body limit's 413, the size check's) are raised as HTTPException so that
    their status and message reach the client."""

    async def body(self) -> bytes:
        """The body as the client meant it: gzip and deflate inflated, as in v2."""
        if not hasattr(self, "_inflated"):
            with _as_http_exception():
                raw = await super().body()
                limit = self.app.state.settings.max_body_bytes
                self._inflated = inflate(raw, self.headers.get("content-encoding"), limit)
        return self._inflated

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            with _as_http_exception():
                self._check_size(body)
            self._json = orjson.loads(body)
        return self._json

    def _check_size(self, body: bytes) -> None:
        """A body for a model (a `name` in the path) is refused before parsing if it holds
        more values than a request to that model may (server.protocol.tensors)."""
        name = self.path_params.get("name")
        if name is None:
            return
        model = self.app.state.repository.get(name)  # 404 / 503 as the route would answer
        settings = self.app.state.settings
        check_json_size(body, model.input_spec(), settings.max_request_batch, "the request")


class OrjsonRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def parse_with_orjson(request: Request) -> Response:
            return await handler(OrjsonRequest(request.scope, request.receive))

        return parse_with_orjson
