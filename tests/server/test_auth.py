"""The optional API key: every route but health and the API documentation needs it."""

from __future__ import annotations

from collections.abc import Callable

from tests.server.conftest import LiveServer


def test_api_key_guards_everything_but_health(serve: Callable[..., LiveServer]) -> None:
    server = serve(api_key="s3cret")
    with server.client() as http:
        assert http.get("/v2/health/live").status_code == 200
        assert http.get("/v2/health/ready").status_code == 200
        for path in ("/v2", "/v2/models/digits", "/v1/models", "/metrics"):
            response = http.get(path)
            assert response.status_code == 401 and "API key" in response.json()["error"], path
        # The API documentation holds no data, and a browser opening it cannot send the key.
        for path in ("/docs", "/openapi.json", "/docs/swagger-ui-bundle.js"):
            assert http.get(path).status_code == 200, path
        assert http.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert http.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert http.get("/v1/models", headers={"X-API-Key": "s3cret"}).status_code == 200
