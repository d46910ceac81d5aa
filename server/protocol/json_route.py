"""FastAPI routes whose JSON bodies are parsed with orjson, FastAPI's own body handling
and validation otherwise unchanged (FastAPI's documented custom Request / APIRoute
pattern).

The v1 API's body is nested lists of pixels: for one 3×32×32 image, json.loads takes
4–10 times as long as orjson (bench/v1_json.py). orjson also refuses nesting deeper than 1024 and
numbers beyond a double, as a JSONDecodeError that server.errors answers with a 400."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute


class OrjsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())
        return self._json


class OrjsonRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def parse_with_orjson(request: Request) -> Response:
            return await handler(OrjsonRequest(request.scope, request.receive))

        return parse_with_orjson
