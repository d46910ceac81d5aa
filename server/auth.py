"""Optional API key on every route but health and the demo page's own files:
`Authorization: Bearer <key>` or `X-API-Key: <key>`, compared in constant time. Probes
reach the health routes freely; the page holds no data and asks for the key itself."""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from server.errors import error_response
from server.protocol.demo_endpoints import PAGE_PATHS
from server.protocol.docs import DOCS_PATHS

# The API documentation holds no data: a browser opening /docs cannot send the key.
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", *PAGE_PATHS, *DOCS_PATHS})


def _presented_key(headers: dict[bytes, bytes]) -> bytes | None:
    if b"x-api-key" in headers:
        return headers[b"x-api-key"]
    scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
    return token.strip() if scheme.lower() == b"bearer" else None


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.key = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            given = _presented_key(dict(scope["headers"]))
            if given is None or not hmac.compare_digest(given, self.key):
                response = error_response(
                    401,
                    "missing or wrong API key: "
                    "send Authorization: Bearer <key> or X-API-Key: <key>",
                    {"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
