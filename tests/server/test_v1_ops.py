"""The v1 JSON API, image upload, and operations: auth, metrics, batching, the CLI."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT
from tests.server.conftest import FIGURES, LiveServer, free_port, wait_until
from tests.server.test_runtime import own_outputs


def png(pixels: np.ndarray) -> bytes:
    """An 8-bit greyscale PNG of a digit image in 0..16."""
    buffer = io.BytesIO()
    Image.fromarray((pixels * 255 / 16).round().astype(np.uint8), mode="L").save(
        buffer, format="PNG"
    )
    return buffer.getvalue()


def test_v1_predict_returns_the_ensemble_answer_and_disagreement(
    server: LiveServer, digits_repo: Path, digit_images: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = digit_images
    with server.client() as http:
        assert http.get("/v1/models").json() == {"models": ["digits"]}
        assert http.get("/v1/models/digits").json() == {"name": "digits", "ready": True}
        response = http.post(
            "/v1/models/digits:predict",
            json={"instances": images[:3].tolist(), "members": True, "top_k": 2, "m": 4},
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == "digits" and body["m"] == 4 and body["snapshots"] == [2, 3, 4, 5]
    members = own_outputs(digits_repo / "digits", images[:3], [2, 3, 4, 5])
    for n, prediction in enumerate(body["predictions"]):
        assert prediction["label"] == labels[n] and prediction["class"] == str(labels[n])
        assert prediction["confidence"] == pytest.approx(members.mean(0)[n].max(), abs=1e-6)
        assert prediction["top_k"][0]["class"] == str(labels[n])
        assert len(prediction["top_k"]) == 2
        for key in FIGURES:
            assert key in prediction
        assert [m["cycle"] for m in prediction["members"]] == [2, 3, 4, 5]
        np.testing.assert_allclose(
            prediction["members"][0]["probabilities"], members[0, n], atol=1e-6
        )


def test_v1_accepts_base64_images_and_two_dimensional_grey_instances(
    server: LiveServer, digit_images: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = digit_images
    instances = [{"b64": base64.b64encode(png(images[0, 0])).decode()}, images[1, 0].tolist()]
    with server.client() as http:
        body = http.post("/v1/models/digits:predict", json={"instances": instances}).json()
    assert [p["label"] for p in body["predictions"]] == labels[:2].tolist()
    assert "members" not in body["predictions"][0]


def test_image_upload_multipart_and_raw(
    server: LiveServer, digit_images: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = digit_images
    # A larger RGB image: converted to grey and resized to 8×8 as the manifest says.
    big = Image.fromarray((images[2, 0] * 255 / 16).astype(np.uint8)).resize(
        (64, 64), Image.Resampling.NEAREST
    )
    buffer = io.BytesIO()
    big.convert("RGB").save(buffer, format="JPEG", quality=95)
    files = [
        ("file", ("a.png", png(images[0, 0]), "image/png")),
        ("file", ("b.png", png(images[1, 0]), "image/png")),
        ("file", ("c.jpg", buffer.getvalue(), "image/jpeg")),
    ]
    with server.client() as http:
        response = http.post("/v1/models/digits/images:predict?members=true", files=files)
        assert response.status_code == 200, response.text
        assert [p["label"] for p in response.json()["predictions"]] == labels[:3].tolist()
        raw = http.post(
            "/v1/models/digits/images:predict",
            content=png(images[3, 0]),
            headers={"Content-Type": "image/png"},
        )
        assert raw.json()["predictions"][0]["label"] == labels[3]


@pytest.mark.parametrize(
    ("kwargs", "status", "message"),
    [
        ({"json": {"instances": []}}, 422, "instances: List should have at least 1 item"),
        (
            {"json": {"instances": [[[1.0, 2.0]]]}},
            400,
            "instance 0 has shape [1, 1, 2]; expected [1, 8, 8]",
        ),
        ({"json": {"instances": [{"b64": "%%%"}]}}, 400, "b64 is not valid base64"),
        (
            {"json": {"instances": [{"b64": base64.b64encode(b"nope").decode()}]}},
            400,
            "not a readable PNG/JPEG",
        ),
        ({"json": {"instances": [[["x"] * 8] * 8]}}, 400, "expected numbers"),
        (
            {
                "content": json.dumps({"instances": [[[float("nan")] * 8] * 8]}),
                "headers": {"Content-Type": "application/json"},
            },
            400,
            "NaN or infinity",
        ),
        (
            {"json": {"instances": [[[0.0] * 8] * 8], "m": 0}},
            422,
            "m: Input should be greater than or equal to 1",
        ),
        ({"json": {"images": []}}, 422, "instances: Field required"),
        ({"content": b"instances=1"}, 422, "the body must be a JSON object"),
    ],
)
def test_v1_bad_input(server: LiveServer, kwargs: dict, status: int, message: str) -> None:
    with server.client() as http:
        response = http.post("/v1/models/digits:predict", **kwargs)
    assert response.status_code == status
    assert message in response.json()["error"]


def test_upload_errors(server: LiveServer) -> None:
    with server.client() as http:
        bad = http.post(
            "/v1/models/digits/images:predict", files=[("file", ("x.png", b"garbage", "image/png"))]
        )
        assert (
            bad.status_code == 415
            and "image 'x.png' is not a readable PNG/JPEG image" in bad.json()["error"]
        )
        wrong = http.post(
            "/v1/models/digits/images:predict",
            content=b"{}",
            headers={"Content-Type": "text/plain"},
        )
        assert wrong.status_code == 415 and "expected multipart/form-data" in wrong.json()["error"]
        unknown = http.post(
            "/v1/models/cats/images:predict", content=b"x", headers={"Content-Type": "image/png"}
        )
        assert unknown.status_code == 404


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


@pytest.mark.parametrize("workers", [1, 2])
def test_concurrent_requests_are_batched_and_each_gets_its_own_rows(
    serve: Callable[..., LiveServer], digit_images: tuple[np.ndarray, np.ndarray], workers: int
) -> None:
    server = serve(max_queue_delay_ms=200, max_batch_size=64, batch_workers=workers)
    images = digit_images[0][:16]
    with server.client() as http:
        alone = http.post("/v1/models/digits:predict", json={"instances": images.tolist()}).json()
    results: dict[int, list[float]] = {}

    def ask(i: int) -> None:
        with server.client() as http:
            body = http.post(
                "/v1/models/digits:predict", json={"instances": [images[i].tolist()]}
            ).json()
        results[i] = body["predictions"][0]["probabilities"]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(16):  # each request got its own row back
        np.testing.assert_allclose(results[i], alone["predictions"][i]["probabilities"], atol=1e-6)
    with server.client() as http:
        text = http.get("/metrics").text
    batches = float(
        next(
            line.split()[-1]
            for line in text.splitlines()
            if line.startswith('snapens_batch_rows_count{model="digits"}')
        )
    )
    assert batches < 1 + 16  # the first request, then fewer onnxruntime runs than requests


def test_cli_serves_and_stops_gracefully_on_sigterm(digits_repo: Path) -> None:
    port = free_port()
    env = {**os.environ, "SNAPENS_PORT": str(port), "SNAPENS_LOG_FORMAT": "json"}
    process = subprocess.Popen(
        [sys.executable, "-m", "server", "--repository", str(digits_repo)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(lambda: _ready(port), timeout=60)
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
    finally:
        process.kill()
    # uvicorn drains and runs the shutdown, then re-raises SIGTERM as processes conventionally do.
    assert process.returncode in (0, -signal.SIGTERM)
    assert f"listening on http://127.0.0.1:{port}" in out
    assert '"msg": "stopped"' in out and '"level": "error"' not in out


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_cli_rejects_bad_settings(tmp_path: Path) -> None:
    missing = subprocess.run(
        [sys.executable, "-m", "server", "--repository", str(tmp_path / "none")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 2 and "no such folder" in missing.stderr
    bad_env = subprocess.run(
        [sys.executable, "-m", "server"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "SNAPENS_MAX_BATCH_SIZE": "zero"},
    )
    assert bad_env.returncode == 1 and "SNAPENS_MAX_BATCH_SIZE" in bad_env.stderr
    assert time.time() > 0
