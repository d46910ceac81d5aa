"""The manifest's temperature is applied in every execution path: the fused graph and the
per-member sessions give softmax(logits / T), the same numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from server.runtime import EnsembleRuntime
from server.settings import RuntimeSettings
from snapens.ensemble import softmax
from snapens.manifest import read_manifest, read_snapshot, write_manifest
from tests.server.conftest import FIGURES


def _with_temperature(model_dir: Path, temperature: float, **more: object) -> None:
    """Rewrite the model's manifest with this temperature (and any other fields given)."""
    manifest = read_manifest(model_dir)
    update = {"temperature": temperature, **more}
    write_manifest(model_dir, manifest.model_copy(update=update))


def test_fused_and_per_member_paths_divide_the_logits_by_the_temperature(
    digits_repo: Path, digit_images: tuple[np.ndarray, np.ndarray]
) -> None:
    model_dir = digits_repo / "digits"
    x = digit_images[0][:64]
    plain = EnsembleRuntime.load(model_dir, None, RuntimeSettings()).run(x)
    _with_temperature(model_dir, 2.5)
    manifest = read_manifest(model_dir)
    logits = np.stack(
        [
            ort.InferenceSession(read_snapshot(model_dir, entry)).run(None, {"input": x})[0]
            for entry in manifest.last(manifest.default_m)
        ]
    )
    expected = softmax(logits.astype(np.float64) / 2.5)
    for execution in ("fused", "per-member"):
        runtime = EnsembleRuntime.load(model_dir, None, RuntimeSettings(execution=execution))
        got = runtime.run(x)
        np.testing.assert_allclose(got.member_probs, expected, atol=1e-6)
        np.testing.assert_allclose(got.mean, expected.mean(axis=0), atol=1e-6)
    # Cooling changes the answer's confidence, not the members' votes.
    assert (got.mean.max(axis=-1) < plain.mean.max(axis=-1) + 1e-7).all()
    assert (got.member_probs.argmax(-1) == plain.member_probs.argmax(-1)).all()


def test_the_metadata_says_when_no_ensemble_beats_its_last_member(digits_repo: Path) -> None:
    model_dir = digits_repo / "digits"
    assert not any(
        "lower validation NLL" in w
        for w in EnsembleRuntime.load(model_dir, None, RuntimeSettings()).warnings
    )
    manifest = read_manifest(model_dir)
    training = {**manifest.training, "calibration": {"beats_last_member": False}}
    write_manifest(model_dir, manifest.model_copy(update={"training": training}))
    warnings = EnsembleRuntime.load(model_dir, None, RuntimeSettings()).warnings
    assert any("lower validation NLL than the last snapshot alone" in w for w in warnings)


def test_the_disagreement_figures_describe_the_members_as_trained(
    digits_repo: Path, digit_images: tuple[np.ndarray, np.ndarray]
) -> None:
    """With a temperature, both paths answer with the scaled mean and give the figures of
    the members at temperature 1: the same figures as without it, and as each other."""
    model_dir = digits_repo / "digits"
    x = digit_images[0][:64]
    plain = EnsembleRuntime.load(model_dir, None, RuntimeSettings()).answer(x).result
    _with_temperature(model_dir, 2.5)
    answers = {
        execution: EnsembleRuntime.load(model_dir, None, RuntimeSettings(execution=execution))
        .answer(x, batch_size=24)  # in parts, as the scorer runs it
        .result
        for execution in ("fused", "per-member")
    }
    for result in answers.values():
        assert (result.confidence < plain.confidence + 1e-7).all()  # cooled
        for name in FIGURES:
            np.testing.assert_allclose(getattr(result, name), getattr(plain, name), atol=1e-6)
    fused, per_member = answers["fused"], answers["per-member"]
    np.testing.assert_allclose(fused.probabilities, per_member.probabilities, atol=1e-6)
    np.testing.assert_array_equal(fused.label, per_member.label)


def test_predict_members_gives_them_as_served_or_as_trained(
    digits_repo: Path, digit_images: tuple[np.ndarray, np.ndarray]
) -> None:
    model_dir = digits_repo / "digits"
    x = digit_images[0][:40]
    as_trained = EnsembleRuntime.load(model_dir, None, RuntimeSettings()).predict_members(x)
    _with_temperature(model_dir, 2.5, default_m=3)  # so that m = 5 runs the earlier group too
    expected = softmax(np.log(as_trained.astype(np.float64)) / 2.5)
    for execution in ("fused", "per-member"):
        settings = RuntimeSettings(execution=execution)
        runtime = EnsembleRuntime.load(model_dir, None, settings, every_snapshot=True)
        assert (runtime.default_m, runtime.m) == (3, 5)
        for m in (2, 5):  # within the served group, and across both groups
            served = runtime.predict_members(x, m, batch_size=16)
            trained = runtime.predict_members(x, m, batch_size=16, trained=True)
            np.testing.assert_allclose(served, expected[-m:], atol=1e-6)
            np.testing.assert_allclose(trained, as_trained[-m:], atol=1e-6)
