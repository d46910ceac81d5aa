"""`/metrics` in Prometheus text format: requests by route and status, durations, batches,
loaded snapshots and the disagreement served."""

from __future__ import annotations

import numpy as np

from tests.server.conftest import LiveServer, wait_until


def test_metrics_count_requests_batches_and_disagreement(
    server: LiveServer, digit_images: tuple[np.ndarray, np.ndarray]
) -> None:
    with server.client() as http:
        for _ in range(3):
            http.post("/v1/models/digits:predict", json={"instances": digit_images[0][:2].tolist()})
        http.post("/v1/models/digits:predict", json={"instances": [[["x"] * 8] * 8]})
        text = http.get("/metrics").text
    assert (
        'snapens_requests_total{method="POST",route="/v1/models/{name}:predict",status="200"} 3.0'
        in text
    )
    assert (
        'snapens_requests_total{method="POST",route="/v1/models/{name}:predict",status="400"} 1.0'
        in text
    )
    route = 'route="/v1/models/{name}:predict"'
    assert f'snapens_request_duration_seconds_count{{method="POST",{route}}} 4.0' in text
    assert 'snapens_loaded_snapshots{model="digits"} 5.0' in text
    assert 'snapens_mutual_information_count{model="digits"} 6.0' in text
    assert 'snapens_batch_rows_sum{model="digits"} 6.0' in text
    for name in (
        "snapens_queue_seconds_bucket",
        "snapens_inference_seconds_bucket",
        "snapens_reloads_total",
    ):
        assert name in text


def test_v2_infer_answered_before_fastapi_is_counted_by_its_route_template(
    server: LiveServer, digit_images: tuple[np.ndarray, np.ndarray]
) -> None:
    x = digit_images[0][:1]
    body = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32"}]}
    body["inputs"][0]["data"] = x.reshape(-1).tolist()
    with server.client() as http:
        assert http.post("/v2/models/digits/infer", json=body).status_code == 200
        assert http.post("/v2/models/digits/versions/1/infer", json=body).status_code == 200
        assert http.post("/v2/models/nope/infer", json=body).status_code == 404
        text = http.get("/metrics").text
    for route, status in (
        ("/v2/models/{name}/infer", "200"),
        ("/v2/models/{name}/versions/{version}/infer", "200"),
        ("/v2/models/{name}/infer", "404"),
    ):
        assert (
            f'snapens_requests_total{{method="POST",route="{route}",status="{status}"}} 1.0' in text
        )


def test_every_route_is_counted_by_its_template_and_only_a_miss_as_unmatched(
    server: LiveServer,
) -> None:
    paths = {
        "/openapi.json": "/openapi.json",
        "/docs": "/docs",
        "/docs/swagger-ui.css": "/docs/swagger-ui.css",
        "/": "/",
        "/favicon.ico": "/favicon.ico",
        "/demo/demo.js": "/demo/{asset}",
        "/no/such/page": "unmatched",
    }
    lines = {
        f'snapens_requests_total{{method="GET",route="{route}",'
        f'status="{"404" if route == "unmatched" else "200"}"}} 1.0'
        for route in paths.values()
    }
    with server.client() as http:
        for path in paths:
            http.get(path)
        # A file's request is counted when its response has ended, which may be after the
        # client has read it all and moved on.
        wait_until(lambda: lines <= set(http.get("/metrics").text.splitlines()), timeout=10)
