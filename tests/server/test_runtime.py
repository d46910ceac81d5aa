"""The ensemble runtime: fused graph, per-member sessions, checks and providers."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from server.ensemble import softmax
from server.manifest import ManifestError, read_manifest
from server.runtime import CPU, EnsembleRuntime, RuntimeLoadError, choose_providers
from server.settings import RuntimeSettings


def own_outputs(model_dir: Path, x: np.ndarray, cycles: list[int]) -> np.ndarray:
    """Each snapshot run alone by onnxruntime: the reference for everything fused."""
    manifest = read_manifest(model_dir)
    probs = []
    for entry in manifest.snapshots:
        if entry.cycle in cycles:
            session = ort.InferenceSession(str(model_dir / entry.file), providers=[CPU])
            probs.append(softmax(session.run(None, {"input": x})[0].astype(np.float64)))
    return np.stack(probs)


def test_fused_and_per_member_give_the_members_own_numbers(
    digits_repo: Path, digit_images: tuple[np.ndarray, np.ndarray]
) -> None:
    x = digit_images[0][:50]
    folder = digits_repo / "digits"
    fused = EnsembleRuntime.load(folder, None, RuntimeSettings(execution="fused"))
    per_member = EnsembleRuntime.load(folder, None, RuntimeSettings(execution="per-member"))
    assert len(fused.sessions) == 1 and len(per_member.sessions) == 5
    reference = own_outputs(folder, x, [1, 2, 3, 4, 5])
    for runtime in (fused, per_member):
        prediction = runtime.run(x)
        assert prediction.member_probs.shape == (5, 50, 10) and prediction.mean.shape == (50, 10)
        np.testing.assert_allclose(prediction.member_probs, reference, atol=1e-6)
        np.testing.assert_allclose(prediction.mean, reference.mean(axis=0), atol=1e-6)
    a, b = fused.run(x), per_member.run(x)
    np.testing.assert_allclose(a.member_probs, b.member_probs, atol=1e-6)
    assert (a.mean.argmax(-1) == b.mean.argmax(-1)).all()


def test_loads_the_last_m_snapshots(
    digits_repo: Path, digit_images: tuple[np.ndarray, np.ndarray]
) -> None:
    folder = digits_repo / "digits"
    runtime = EnsembleRuntime.load(folder, 2, RuntimeSettings())
    assert [e.cycle for e in runtime.members] == [4, 5]
    x = digit_images[0][:8]
    np.testing.assert_allclose(
        runtime.run(x).member_probs, own_outputs(folder, x, [4, 5]), atol=1e-6
    )
    more = EnsembleRuntime.load(folder, 9, RuntimeSettings())
    assert more.m == 5 and "serving those" in more.warnings[0]
    members = more.predict_members(digit_images[0][:300], m=3, batch_size=64)
    assert members.shape == (3, 300, 10)


def test_a_corrupt_snapshot_is_refused_with_the_reason(digits_repo: Path) -> None:
    folder = digits_repo / "digits"
    (folder / "snapshots" / "005.onnx").write_bytes(b"\x08\x07 not the exported graph")
    with pytest.raises(ManifestError, match=r"005\.onnx: sha256 .* does not match"):
        EnsembleRuntime.load(folder, None, RuntimeSettings())
    # Older snapshots are intact; a set that leaves the bad one out loads.
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["snapshots"] = manifest["snapshots"][:4]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert EnsembleRuntime.load(folder, None, RuntimeSettings()).m == 4


def test_a_file_that_is_not_onnx_but_matches_its_checksum_is_refused(digits_repo: Path) -> None:
    import hashlib

    folder = digits_repo / "digits"
    junk = b"\x00\x01 not a protobuf"
    (folder / "snapshots" / "005.onnx").write_bytes(junk)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["snapshots"][-1]["sha256"] = hashlib.sha256(junk).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RuntimeLoadError, match=r"005\.onnx"):
        EnsembleRuntime.load(folder, None, RuntimeSettings())


def test_a_model_without_snapshots_is_not_loadable(digits_repo: Path) -> None:
    folder = digits_repo / "digits"
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest |= {"snapshots": [], "state": "training"}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="no snapshots yet"):
        EnsembleRuntime.load(folder, None, RuntimeSettings())


def test_providers_follow_the_setting_and_a_missing_gpu_is_loud(
    digits_repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert choose_providers("cpu") == ([CPU], [])
    auto, problems = choose_providers("auto")
    assert auto[-1] == CPU and problems == []  # auto never complains
    with caplog.at_level(logging.WARNING, logger="snapens.runtime"):
        runtime = EnsembleRuntime.load(
            digits_repo / "digits", None, RuntimeSettings(providers="cuda")
        )
    if "CUDAExecutionProvider" in runtime.providers:  # a machine with a working GPU
        assert runtime.warnings == []
    else:
        assert runtime.providers == [CPU]
        assert runtime.warnings and "GPU NOT IN USE" in caplog.text
