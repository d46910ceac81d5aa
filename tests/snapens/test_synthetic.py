"""snapens.synthetic: a complete, checksummed model folder written without torch, whose ONNX
snapshots compute what their weights say and disagree now and then."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from snapens.manifest import read_manifest, read_snapshot
from snapens.synthetic import classifier_onnx, fit_classifiers, write_model_folder


def test_the_folder_is_complete_and_every_snapshot_checks_out(synthetic_digits: Path) -> None:
    manifest = read_manifest(synthetic_digits)
    assert manifest.state == "complete" and manifest.default_m == 5
    assert manifest.classes == [str(k) for k in range(10)]
    assert manifest.input.shape == [-1, 1, 8, 8] and manifest.input.pixel_range == (0, 16)
    assert [s.cycle for s in manifest.snapshots] == [1, 2, 3, 4, 5]
    for entry in manifest.snapshots:
        read_snapshot(synthetic_digits, entry)
        assert entry.val_accuracy > 0.9
    report = json.loads((synthetic_digits / "report.json").read_text())
    assert len(report["snapshots"]) == 5 and report["ensemble"]["m"] == 5
    assert report["validation_examples"] == manifest.training["dataset"]["val_examples"]
    for name in ("learning_rate.png", "ensemble_size.png", "disagreement.png"):
        with Image.open(synthetic_digits / name) as image:
            assert image.format == "PNG" and image.width > 0


def test_the_graph_computes_the_members_weights_and_members_disagree(
    digit_images: tuple[np.ndarray, np.ndarray],
) -> None:
    images, labels = digit_images
    members = fit_classifiers(images[:1000], labels[:1000], 3, 10, seed=7)
    noise = np.random.default_rng(0).uniform(0, 16, (50, 1, 8, 8)).astype(np.float32)
    x = np.concatenate([images[1000:1100], noise])
    votes = []
    for member in members:
        session = ort.InferenceSession(classifier_onnx(member, [-1, 1, 8, 8]))
        (logits,) = session.run(None, {"input": x})
        np.testing.assert_allclose(logits, member.logits(x), rtol=1e-4, atol=1e-4)
        assert (logits[:100].argmax(-1) == labels[1000:1100]).mean() > 0.9
        votes.append(logits.argmax(-1))
    assert (np.ptp(np.stack(votes), axis=0) > 0).any()  # not three copies of one model


def test_the_same_arguments_write_the_same_snapshots(
    tmp_path: Path, digit_images: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = digit_images[0][:300], digit_images[1][:300]
    folders = [
        write_model_folder(tmp_path / run, "small", images, labels, snapshots=2, report=False)
        for run in ("a", "b")
    ]
    first, second = (read_manifest(folder) for folder in folders)
    assert [s.sha256 for s in first.snapshots] == [s.sha256 for s in second.snapshots]
    assert first.state == "complete" and not (folders[0] / "report.json").exists()
