"""SWA of the snapshots and the end-of-run calibration: the averaged weights are the mean
of the snapshots', batch norm is recomputed, the SWA model is exported, verified and
served like any; the temperature lowers the validation NLL; the served m follows the rule."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from server.runtime import EnsembleRuntime
from server.settings import RuntimeSettings
from snapens.folder import ModelFolder
from snapens.manifest import read_manifest
from tests.conftest import run_trainer_process
from trainer.calibrate import calibrate
from trainer.config_file import build_config
from trainer.data import Dataset
from trainer.runtime import runtime
from trainer.swa import SnapshotAverage
from trainer.train import Trainer


def test_the_average_is_the_mean_of_the_snapshots_and_batch_norm_is_recomputed() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(72, 3))
    average = SnapshotAverage(net)
    taken = []
    for _ in range(3):
        with torch.no_grad():
            for p in net.parameters():
                p.normal_()
        average.add(net)
        taken.append({k: v.detach().clone() for k, v in net.named_parameters()})
    assert average.count == 3
    for name, value in average.averaged.module.named_parameters():
        np.testing.assert_allclose(
            value.detach(), torch.stack([t[name] for t in taken]).mean(0).numpy(), atol=1e-6
        )
    x = torch.randn(64, 1, 8, 8) * 3 + 2
    model = average.network(x[i : i + 16] for i in range(0, 64, 16))
    conv = model[0](x).detach()
    np.testing.assert_allclose(
        model[1].running_mean.detach(), conv.mean((0, 2, 3)), rtol=1e-4, atol=1e-5
    )
    assert not model.training


def _overconfident(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 10, 1500)
    logits = rng.normal(0, 1, (4, 1500, 10))
    right = rng.random((4, 1500)) < 0.8
    np.put_along_axis(logits, np.where(right, targets, (targets + 1) % 10)[..., None], 9.0, -1)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return probs.astype(np.float32), targets


def test_calibration_lowers_the_nll_and_chooses_the_served_m() -> None:
    probs, targets = _overconfident(0)
    fitted = calibrate(probs, targets, fit=True, default_m=None)
    assert fitted.temperature != 1.0 and fitted.after["nll"] < fitted.before["nll"]
    assert fitted.default_m >= 2 and len(fitted.nll_by_m) == 4
    assert fitted.nll_by_m[fitted.default_m - 1] == min(fitted.nll_by_m[1:])
    plain = calibrate(probs, targets, fit=False, default_m=None)
    assert plain.temperature == 1.0 and plain.after == plain.before
    given = calibrate(probs, targets, fit=True, default_m=3)
    assert given.default_m == 3 and given.rule == "given: --default-m"


@pytest.fixture(scope="module")
def fge_swa_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("fge")
    args = ["--repository", str(repo), "--name", "run", "--schedule", "fge", "--epochs", "10"]
    args += ["--fge-fraction", "0.6", "--cycle-epochs", "2", "--swa", "--quiet"]
    result = run_trainer_process(*args)
    assert result.returncode == 0, result.stderr
    return repo


def test_a_fge_run_writes_a_calibrated_ensemble_and_its_swa_model(fge_swa_run: Path) -> None:
    manifest = read_manifest(fge_swa_run / "run")
    report: dict[str, Any] = json.loads((fge_swa_run / "run" / "report.json").read_text())
    assert len(manifest.snapshots) == 2 and manifest.training["schedule"]["name"] == "fge"
    calibration = report["calibration"]
    assert manifest.temperature == calibration["temperature"] > 0
    assert manifest.default_m == calibration["default_m"] == 2
    assert calibration["after"]["nll"] <= calibration["before"]["nll"] + 1e-12
    assert manifest.training["calibration"] == calibration

    swa = read_manifest(fge_swa_run / "run-swa")
    assert [s.cycle for s in swa.snapshots] == [1] and swa.default_m == 1
    assert swa.snapshots[0].export_max_abs_diff <= 1e-4
    assert swa.training["swa"] == {"of": "run", "members_averaged": 2}
    assert report["swa"]["model"] == "run-swa"
    assert report["swa"]["error"] == pytest.approx(1 - swa.snapshots[0].val_accuracy)
    # Its own calibration, not the ensemble's: one model, its own temperature.
    own = swa.training["calibration"]
    assert own["default_m"] == 1 and own["default_m_rule"].startswith("one model")
    assert swa.temperature == own["temperature"] == report["swa"]["temperature"]
    assert swa.temperature != manifest.temperature
    assert own["before"]["error"] == pytest.approx(report["swa"]["error"])
    assert own["before"]["nll"] == pytest.approx(report["swa"]["nll"], rel=1e-5)
    assert own["after"]["nll"] <= own["before"]["nll"] + 1e-12
    runtime = EnsembleRuntime.load(fge_swa_run / "run-swa", None, RuntimeSettings())
    assert runtime.m == 1  # served like any model


def test_no_calibrate_and_default_m_are_honoured(tmp_path: Path) -> None:
    args = ["--repository", str(tmp_path), "--epochs", "10", "--cycles", "5", "--quiet"]
    result = run_trainer_process(*args, "--name", "a", "--no-calibrate", "--default-m", "4")
    assert result.returncode == 0, result.stderr
    manifest = read_manifest(tmp_path / "a")
    assert manifest.temperature == 1.0 and manifest.default_m == 4


@pytest.mark.parametrize("augment", ["crop-flip", "none"])
def test_batch_norm_is_recomputed_on_images_augmented_as_in_training(
    augment: str, tmp_path: Path
) -> None:
    """The SWA model's statistics come from one pass over the training split as the network
    saw it: padded random crops and flips where training used them (unaugmented statistics
    cost several points of error), the same pass every time, every image once."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (40, 3, 16, 16), dtype=torch.uint8, generator=generator)
    data = Dataset(x, torch.arange(40) % 2, ["a", "b"], (0.0, 255.0), "RGB", "test")
    cfg = build_config(
        {},
        {
            "dataset": "npz",
            "data": tmp_path / "x.npz",
            "arch": "mlp",
            "augment": augment,
            "swa": True,
            "schedule": "fge",
            "epochs": 6,
            "cycle_epochs": 2,
            "batch_size": 16,
            "repository": tmp_path,
        },
    )
    with runtime("cpu") as rt:
        trainer = Trainer(cfg, rt, data, ModelFolder(tmp_path, "m"), None)
        first = torch.cat(list(trainer.training_pass()))
        again = torch.cat(list(trainer.training_pass()))
    plain = trainer.train_x.float()
    assert first.shape == plain.shape and torch.equal(first, again)
    if augment == "none":
        assert torch.equal(first, plain)
    else:
        assert not torch.equal(first, plain)
        # Crops of zero-padded images bring zero borders in: the statistics really differ.
        assert (first == 0).float().mean() > 5 * (plain == 0).float().mean()
        assert first.mean() < plain.mean()
