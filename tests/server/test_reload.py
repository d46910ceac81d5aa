"""Hot reload: new snapshot sets swap in while requests flow, and bad ones are kept out."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from snapens.manifest import read_manifest
from snapens.synthetic import write_model_folder
from tests.server.conftest import LiveServer, ServedSetWatch, copy_model, wait_until


def test_hot_reload_while_snapshots_are_written(
    serve: Callable[..., LiveServer], tmp_path: Path, digit_images: tuple[np.ndarray, np.ndarray]
) -> None:
    """A folder written snapshot by snapshot, as the trainer writes one (no torch: each
    snapshot waits until every asking thread has been answered by it)."""
    repo = tmp_path / "live"
    repo.mkdir()
    server = serve(repo, poll_interval_s=0.1)

    watch = ServedSetWatch(server, {"instances": digit_images[0][:4].tolist()})

    def served(cycle: int) -> None:
        """After each snapshot is listed: the first starts the clients once the model is
        ready; every one is awaited until each asking thread has been answered by it."""
        if cycle == 1:
            url = f"{server.url}/v2/models/digits/ready"
            wait_until(lambda: httpx.get(url, timeout=5).status_code == 200, timeout=60)
            watch.start()
        wait_until(lambda: all(bool(seen) and seen[-1][-1] == cycle for seen in watch.seen_sets))

    def metadata() -> dict[str, Any]:
        with server.client() as http:
            parameters: dict[str, Any] = http.get("/v2/models/digits").json()["parameters"]
        return parameters

    images, labels = digit_images
    try:
        write_model_folder(
            repo, "digits", images, labels, pixel_range=(0, 16), after_snapshot=served
        )
        wait_until(lambda: watch.every_asker_saw([1, 2, 3, 4, 5]), timeout=30)
        wait_until(lambda: metadata()["training_state"] == "complete")
    finally:
        watch.stop()
    watch.assert_swaps_were_seamless()
    meta = metadata()
    assert meta["m"] == 5 and meta["training_state"] == "complete"


def _add_snapshot(folder: Path, data: bytes, digest: str) -> None:
    """Extend the manifest with a sixth snapshot, as the trainer would."""
    (folder / "snapshots" / "006.onnx").write_bytes(data)
    manifest = json.loads((folder / "manifest.json").read_text())
    entry = dict(
        manifest["snapshots"][-1],
        file="snapshots/006.onnx",
        cycle=6,
        step=manifest["snapshots"][-1]["step"] + 1,
        sha256=digest,
        bytes=len(data),
    )
    manifest["snapshots"].append(entry)
    tmp = folder / "manifest.json.new"
    tmp.write_text(json.dumps(manifest))
    tmp.replace(folder / "manifest.json")


def test_a_set_that_fails_its_checks_is_kept_out_and_the_old_one_serves(
    serve: Callable[..., LiveServer], digits_repo: Path, digit_images: tuple[np.ndarray, np.ndarray]
) -> None:
    server = serve(poll_interval_s=0.1)
    folder = digits_repo / "digits"
    good = (folder / "snapshots" / "005.onnx").read_bytes()
    _add_snapshot(folder, good[:-10] + b"corrupted!", hashlib.sha256(good).hexdigest())

    def load_failed() -> bool:
        with server.client() as http:
            return (
                http.get("/v2/models/digits").json()["parameters"]["last_load"]["status"]
                == "failed"
            )

    wait_until(load_failed, timeout=30)
    with server.client() as http:
        meta = http.get("/v2/models/digits").json()["parameters"]
        assert "006.onnx: sha256" in meta["last_load"]["error"]
        assert [s["cycle"] for s in meta["snapshots"]] == [
            1,
            2,
            3,
            4,
            5,
        ]  # the old set still serves
        response = http.post(
            "/v1/models/digits:predict", json={"instances": digit_images[0][:2].tolist()}
        )
        assert response.status_code == 200 and response.json()["snapshots"] == [1, 2, 3, 4, 5]
        assert http.get("/v2/health/ready").status_code == 200
        assert http.head("/v2/health/ready").status_code == 200
        (index,) = http.post("/v2/repository/index").json()
        assert index["state"] == "READY" and "006.onnx: sha256" in index["reason"]

        # An explicit load says why it refused, and the old set keeps serving.
        refused = http.post("/v2/repository/models/digits/load")
        assert refused.status_code == 400 and "006.onnx: sha256" in refused.json()["error"]

        (folder / "snapshots" / "006.onnx").write_bytes(good)  # the file is repaired
        loaded = http.post("/v2/repository/models/digits/load")
        assert loaded.status_code == 200 and loaded.json()["snapshots"] == [2, 3, 4, 5, 6]
        response = http.post(
            "/v1/models/digits:predict", json={"instances": digit_images[0][:2].tolist()}
        )
        assert response.json()["snapshots"] == [2, 3, 4, 5, 6]
        text = http.get("/metrics").text
        assert 'snapens_reloads_total{model="digits",outcome="failed"}' in text


def test_models_appear_and_unknown_loads_are_404(
    serve: Callable[..., LiveServer], digits_repo: Path, synthetic_digits: Path
) -> None:
    server = serve(poll_interval_s=0)  # polling off: only explicit loads
    copy_model(synthetic_digits, digits_repo, "second")
    with server.client() as http:
        assert http.get("/v2/models/second").status_code == 404
        assert http.post("/v2/repository/models/second/load").status_code == 200
        assert http.get("/v2/models/second/ready").status_code == 200
        assert http.get("/v1/models").json() == {"models": ["digits", "second"]}
        missing = http.post("/v2/repository/models/third/load")
        assert missing.status_code == 404 and "no model folder 'third'" in missing.json()["error"]
    assert read_manifest(digits_repo / "second").name == "digits"


def test_a_model_without_snapshots_is_not_ready_and_answers_503(
    serve: Callable[..., LiveServer], tmp_path: Path, synthetic_digits: Path
) -> None:
    repo = copy_model(synthetic_digits, tmp_path / "waiting")
    manifest = json.loads((repo / "digits" / "manifest.json").read_text())
    manifest |= {"snapshots": [], "state": "training"}
    (repo / "digits" / "manifest.json").write_text(json.dumps(manifest))
    server = serve(repo, wait_ready=False)
    with server.client() as http:
        wait_until(
            lambda: (
                http.get("/v2/models/digits").json()["parameters"]["last_load"]["status"]
                == "failed"
            )
        )
        assert http.get("/v2/health/live").status_code == 200
        assert http.get("/v2/health/ready").status_code == 503
        head = http.head("/v2/health/ready")  # as probes that ask with HEAD do
        assert head.status_code == 503 and head.content == b""
        assert http.head("/v2/health/live").status_code == 200
        refused = http.post("/v2/health/ready")  # Allow names both routes' methods
        assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"
        assert http.get("/v2/models/digits/ready").status_code == 503
        body = {
            "inputs": [
                {"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.0] * 64}
            ]
        }
        response = http.post("/v2/models/digits/infer", json=body)
        assert response.status_code == 503 and "not ready" in response.json()["error"]
        response = http.post("/v1/models/digits:predict", json={"instances": [[[0.0] * 8] * 8]})
        assert response.status_code == 503
        assert "no snapshots yet" in http.post("/v2/repository/index").json()[0]["reason"]


def _break(folder: Path, how: str) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    if how == "not UTF-8":
        (folder / "manifest.json").write_bytes(b"\x80garbage")
    elif how == "nested too deeply":
        (folder / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    elif how == "snapshot is a folder":
        (folder / "snapshots" / "dir.onnx").mkdir()
        manifest["snapshots"][-1]["file"] = "snapshots/dir.onnx"
        (folder / "manifest.json").write_text(json.dumps(manifest))
    else:  # the manifest's input shape is not the graphs'
        manifest["input"]["shape"] = [-1, 1, 4, 4]
        (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("not UTF-8", "not valid JSON (not UTF-8 text)"),
        ("nested too deeply", "nested too deeply"),
        ("snapshot is a folder", "dir.onnx: listed in the manifest but unreadable"),
        ("wrong input shape", "do not answer an input of the manifest's shape [-1, 1, 4, 4]"),
    ],
)
def test_a_broken_folder_at_start_fails_alone_and_the_others_load_and_reload(
    serve: Callable[..., LiveServer],
    tmp_path: Path,
    synthetic_digits: Path,
    digit_images: tuple[np.ndarray, np.ndarray],
    how: str,
    reason: str,
) -> None:
    """A folder whose load fails in a way no check names (sorted before the good one) is
    reported as failed; the server still becomes ready, serves the good model, answers an
    explicit load of the broken one with a 4xx, and its poller goes on to new folders."""
    repo = tmp_path / "repo"
    copy_model(synthetic_digits, repo, "alpha")
    copy_model(synthetic_digits, repo, "digits")
    _break(repo / "alpha", how)
    server = serve(repo, poll_interval_s=0.1)
    body = {"instances": digit_images[0][:2].tolist()}
    with server.client() as http:
        assert http.post("/v1/models/digits:predict", json=body).status_code == 200
        meta = http.get("/v2/models/alpha").json()["parameters"]
        assert meta["ready"] is False and meta["last_load"]["status"] == "failed"
        assert reason in meta["last_load"]["error"]
        assert str(tmp_path) not in meta["last_load"]["error"]
        refused = http.post("/v2/repository/models/alpha/load")
        assert refused.status_code == 400 and reason in refused.json()["error"]
        copy_model(synthetic_digits, repo, "zeta")  # sorted after both: the poller finds it
        wait_until(lambda: http.get("/v2/models/zeta/ready").status_code == 200)
        states = {m["name"]: m["state"] for m in http.post("/v2/repository/index").json()}
        assert states == {"alpha": "UNAVAILABLE", "digits": "READY", "zeta": "READY"}
