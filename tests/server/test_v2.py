"""The Open Inference Protocol over real HTTP, with JSON tensors and with binary tensors
through stock tritonclient."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.server.conftest import FIGURES, LiveServer
from tests.server.test_runtime import own_outputs
from tests.snapens.test_ensemble import reference


def json_infer(server: LiveServer, x: np.ndarray, **extra: object) -> dict:
    body = {
        "inputs": [
            {
                "name": "input",
                "shape": list(x.shape),
                "datatype": "FP32",
                "data": x.reshape(-1).tolist(),
            }
        ],
        **extra,
    }
    with server.client() as client:
        response = client.post("/v2/models/digits/infer", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def outputs_of(body: dict) -> dict[str, np.ndarray]:
    return {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in body["outputs"]}


def mixed_inputs(images: np.ndarray) -> np.ndarray:
    """Real digits and random noise images (on which snapshots disagree)."""
    noise = np.random.default_rng(0).uniform(0, 16, (20, 1, 8, 8))
    return np.concatenate([images[:10], noise]).astype(np.float32)


def test_server_and_model_metadata(server: LiveServer) -> None:
    client = triton.InferenceServerClient(server.address)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("digits")
    assert client.get_server_metadata()["extensions"] == [
        "binary_tensor_data",
        "classification",
        "model_repository",
    ]
    meta = client.get_model_metadata("digits")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    names = {o["name"]: o for o in meta["outputs"]}
    assert names["probabilities"]["shape"] == [-1, 10] and names["label"]["datatype"] == "INT64"
    assert names["member_probabilities"]["shape"] == [5, -1, 10]
    params = meta["parameters"]
    assert params["m"] == 5 and params["providers"] == ["CPUExecutionProvider"]
    assert [s["cycle"] for s in params["snapshots"]] == [1, 2, 3, 4, 5]
    assert params["last_load"]["status"] == "loaded" and params["classes"][3] == "3"
    assert client.get_model_metadata("digits", "1")["name"] == "digits"
    with server.client() as http:
        assert http.get("/v2/models/digits/versions/2").status_code == 404
        assert http.get("/v2/models/digits/versions/1/ready").status_code == 200
        assert http.get("/docs").status_code == 200
        assert "/v2/models/{name}/infer" in http.get("/openapi.json").json()["paths"]


def test_json_tensors_and_figures_match_a_reference_from_the_members_own_outputs(
    server: LiveServer, digits_repo: Path, digit_images: tuple[np.ndarray, np.ndarray]
) -> None:
    x = mixed_inputs(digit_images[0])
    out = outputs_of(json_infer(server, x))
    members = own_outputs(digits_repo / "digits", x, [1, 2, 3, 4, 5])
    np.testing.assert_allclose(out["probabilities"], members.mean(axis=0), atol=1e-6)
    for n in range(len(x)):
        ref = reference(members, n)
        assert out["label"][n] == ref["label"]
        assert out["confidence"][n] == pytest.approx(ref["confidence"], abs=1e-6)
        for name in FIGURES:
            assert out[name][n] == pytest.approx(ref[name], abs=2e-5), name
    assert out["class_name"].tolist() == [str(v) for v in out["label"]]
    assert (out["pairwise_disagreement"][10:] > 0).sum() >= 3  # snapshots disagree on noise


def test_binary_tensors_through_tritonclient_with_its_defaults(
    server: LiveServer, digit_images: tuple[np.ndarray, np.ndarray]
) -> None:
    x = mixed_inputs(digit_images[0])
    client = triton.InferenceServerClient(server.address)
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)  # binary by default
    result = client.infer("digits", [tensor])  # no outputs named: every output, binary
    expected = outputs_of(json_infer(server, x))
    for name in ("probabilities", "label", "confidence", *FIGURES):
        np.testing.assert_allclose(result.as_numpy(name), expected[name], rtol=1e-6, atol=1e-7)
    assert result.as_numpy("label").dtype == np.int64
    assert result.as_numpy("class_name").tolist() == [str(v).encode() for v in expected["label"]]
    assert result.as_numpy("member_probabilities") is None  # only on request

    # JSON data in and JSON outputs out, through the same client.
    tensor.set_data_from_numpy(x, binary_data=False)
    result = client.infer(
        "digits", [tensor], outputs=[triton.InferRequestedOutput("label", binary_data=False)]
    )
    assert result.as_numpy("label").tolist() == expected["label"].tolist()


def test_per_request_m_and_member_outputs(
    server: LiveServer, digits_repo: Path, digit_images: tuple[np.ndarray, np.ndarray]
) -> None:
    x = mixed_inputs(digit_images[0])
    client = triton.InferenceServerClient(server.address)
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    wanted = [
        triton.InferRequestedOutput(n)
        for n in ("member_probabilities", "member_labels", "probabilities", "pairwise_disagreement")
    ]
    result = client.infer("digits", [tensor], outputs=wanted, parameters={"m": 3})
    members = own_outputs(digits_repo / "digits", x, [3, 4, 5])
    np.testing.assert_allclose(result.as_numpy("member_probabilities"), members, atol=1e-6)
    np.testing.assert_allclose(result.as_numpy("probabilities"), members.mean(axis=0), atol=1e-6)
    assert (result.as_numpy("member_labels") == members.argmax(-1)).all()
    for n in range(len(x)):
        assert result.as_numpy("pairwise_disagreement")[n] == pytest.approx(
            reference(members, n)["pairwise_disagreement"]
        )
    body = result.get_response()
    assert body["parameters"] == {"m": 3, "snapshots": [3, 4, 5]}
    # "members": true adds the member outputs to the default set.
    out = outputs_of(json_infer(server, x[:2], parameters={"members": True, "m": 2}))
    assert out["member_probabilities"].shape == (2, 2, 10) and out["member_labels"].shape == (2, 2)


def test_classification_extension(
    server: LiveServer, digit_images: tuple[np.ndarray, np.ndarray]
) -> None:
    x = digit_images[0][:3]
    client = triton.InferenceServerClient(server.address)
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer(
        "digits", [tensor], outputs=[triton.InferRequestedOutput("probabilities", class_count=2)]
    )
    top = result.as_numpy("probabilities")
    assert top.shape == (3, 2)
    score, index, label = top[0, 0].decode().split(":")
    assert (
        int(index) == digit_images[1][0] and label == str(digit_images[1][0]) and float(score) > 0.5
    )


def test_gzip_request_bodies_as_tritonclient_sends_them(
    server: LiveServer, digit_images: tuple[np.ndarray, np.ndarray]
) -> None:
    x = digit_images[0][:4]
    client = triton.InferenceServerClient(server.address)
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer("digits", [tensor], request_compression_algorithm="gzip")
    assert result.as_numpy("label").tolist() == digit_images[1][:4].tolist()
    with server.client() as http:
        bomb = gzip.compress(b"{" + b" " * (server.settings.max_body_bytes + 10) + b"}")
        response = http.post(
            "/v2/models/digits/infer", content=bomb, headers={"Content-Encoding": "gzip"}
        )
        assert response.status_code == 413


def _post(server: LiveServer, body: object, **kwargs: object) -> tuple[int, str]:
    with server.client() as http:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = http.post("/v2/models/digits/infer", content=content, **kwargs)  # type: ignore[arg-type]
    return response.status_code, response.json()["error"]


def _tensor(**changes: object) -> dict:
    tensor: dict = {"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.0] * 64}
    return {"inputs": [tensor | changes]}


BAD = [
    ("malformed JSON", b'{"inputs": [', 400, "malformed JSON"),
    ("not an object", b"[1, 2]", 400, "request"),
    (
        "wrong tensor name",
        _tensor(name="x"),
        400,
        "expected one input 'input' of FP32 [N, 1, 8, 8]; got 'x'",
    ),
    ("two inputs", {"inputs": _tensor()["inputs"] * 2}, 400, "expected one input"),
    ("wrong datatype", _tensor(datatype="INT64"), 400, "must be FP32, got INT64"),
    (
        "wrong shape",
        _tensor(shape=[1, 8, 8, 1]),
        400,
        "has shape [1, 8, 8, 1]; expected [N, 1, 8, 8]",
    ),
    ("wrong element count", _tensor(data=[0.0] * 10), 400, "needs 64 values, got 10"),
    ("not numbers", _tensor(data=["a"] * 64), 400, "data must be numbers"),
    # The client writes NaN and Infinity, which are not JSON: the parser refuses them.
    ("NaN", _tensor(data=[float("nan")] + [0.0] * 63), 400, "malformed JSON"),
    ("infinity", _tensor(data=[1e400] + [0.0] * 63), 400, "malformed JSON"),
    ("empty batch", _tensor(shape=[0, 1, 8, 8], data=[]), 400, "empty batch"),
    (
        "batch over the limit",
        _tensor(shape=[300, 1, 8, 8], data=[0.0] * 300 * 64),
        413,
        "at most 256 per request",
    ),
    ("bad m", {**_tensor(), "parameters": {"m": 9}}, 400, "m must be between 1 and 5"),
    ("m not a number", {**_tensor(), "parameters": {"m": "3"}}, 400, "'m' must be a whole number"),
    (
        "unknown output",
        {**_tensor(), "outputs": [{"name": "logits"}]},
        400,
        "unknown output 'logits'",
    ),
    ("missing data", _tensor(data=None), 400, "neither data nor binary_data_size"),
]


@pytest.mark.parametrize(("case", "body", "status", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_one_clear_error_and_the_server_keeps_serving(
    server: LiveServer,
    case: str,
    body: object,
    status: int,
    message: str,
    digit_images: tuple[np.ndarray, np.ndarray],
) -> None:
    code, error = _post(server, body)
    assert code == status, case
    assert message in error
    json_infer(server, digit_images[0][:1])  # still serving


def test_binary_requests_with_a_wrong_size_are_refused(server: LiveServer) -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, 1, 8, 8],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 100},
                }
            ]
        }
    ).encode()
    code, error = _post(
        server,
        header + b"\x00" * 100,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert code == 400 and "needs 256 bytes of FP32, got 100" in error
    code, error = _post(server, header, headers={"Inference-Header-Content-Length": "99999"})
    assert code == 400 and "does not fit a body" in error


def test_unknown_model_and_body_limit(
    serve: object, digit_images: tuple[np.ndarray, np.ndarray]
) -> None:
    server: LiveServer = serve(max_body_bytes=4096)  # type: ignore[operator]
    with server.client() as http:
        response = http.post("/v2/models/nope/infer", json=_tensor())
        assert (
            response.status_code == 404
            and "unknown model 'nope' (models: digits)" in response.json()["error"]
        )
        assert http.get("/v2/models/nope/ready").status_code == 404
        big = _tensor(shape=[20, 1, 8, 8], data=[0.0] * 20 * 64)
        response = http.post("/v2/models/digits/infer", json=big)
        assert (
            response.status_code == 413
            and "exceeds the limit of 4096 bytes" in response.json()["error"]
        )
    client = triton.InferenceServerClient(server.address)
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.get_model_metadata("nope")
