"""The v1 JSON API: `POST /v1/models/{name}:predict` with instances as arrays or base64
images, the ensemble's answer with its disagreement, and one clear error for bad input."""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from tests.server.conftest import FIGURES, LiveServer, png
from tests.server.test_runtime import own_outputs

JSON = {"Content-Type": "application/json"}


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


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_v1_takes_a_compressed_body_as_v2_does(
    server: LiveServer, digit_images: tuple[np.ndarray, np.ndarray], encoding: str
) -> None:
    body = json.dumps({"instances": digit_images[0][:3].tolist(), "m": 2}).encode()
    packed = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
    with server.client() as http:
        plain = http.post("/v1/models/digits:predict", content=body, headers=JSON)
        inflated = http.post(
            "/v1/models/digits:predict",
            content=packed,
            headers={**JSON, "Content-Encoding": encoding},
        )
        refused = http.post(
            "/v1/models/digits:predict",
            content=packed,
            headers={**JSON, "Content-Encoding": "br"},
        )
    assert inflated.status_code == 200 and inflated.json() == plain.json()
    assert (
        refused.status_code == 415 and "expected gzip, deflate or none" in refused.json()["error"]
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
            "not a readable image",
        ),
        ({"json": {"instances": [[["x"] * 8] * 8]}}, 400, "expected numbers"),
        # The client writes NaN, which is not JSON: the parser refuses it, as in v2.
        (
            {
                "content": json.dumps({"instances": [[[float("nan")] * 8] * 8]}),
                "headers": {"Content-Type": "application/json"},
            },
            400,
            "malformed JSON",
        ),
        # A double that float32 cannot hold becomes infinity, and is refused.
        ({"json": {"instances": [[[1e300] * 8] * 8]}}, 400, "NaN or infinity"),
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
