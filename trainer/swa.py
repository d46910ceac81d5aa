"""Stochastic Weight Averaging of the snapshots (Izmailov et al. 2018), written as a model
of its own.

The snapshots' weights are averaged as they are taken (`torch.optim.swa_utils`'
`AveragedModel`, buffers not averaged), so nothing beyond one copy of the network is kept;
at the end the batch-norm statistics are recomputed (`update_bn`) on one pass over the
training data, augmented as in training (statistics of unaugmented images do not match
what the network was trained on: on a CIFAR-10 FGE run they gave 35.2% error against
28.8%), and the average is exported, verified and evaluated like any snapshot and written as the
model `<name>-swa` with one member: one network, served at single-model cost."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, update_bn

from snapens.folder import ModelFolder, SnapshotMeta
from snapens.manifest import Manifest
from trainer.calibrate import calibrate_one_model
from trainer.evaluate import Evaluation, evaluate
from trainer.export import SnapshotExporter, verify_onnx
from trainer.nets import Normalized

SUFFIX = "-swa"


def swa_name(name: str) -> str:
    return f"{name}{SUFFIX}"


class SnapshotAverage:
    """The running average of the snapshots' weights."""

    def __init__(self, model: nn.Module) -> None:
        self.averaged = AveragedModel(model)

    @property
    def count(self) -> int:
        return int(self.averaged.n_averaged)

    def add(self, model: nn.Module) -> None:
        self.averaged.update_parameters(model)

    def state(self) -> dict[str, Any]:
        return self.averaged.state_dict()

    def load_state(self, state: dict[str, Any]) -> None:
        self.averaged.load_state_dict(state)

    @torch.no_grad()
    def network(self, batches: Iterable[torch.Tensor]) -> nn.Module:
        """The averaged network with batch-norm statistics recomputed on `batches` (the
        training data as the network was trained on it)."""
        model = self.averaged.module
        update_bn(batches, model)
        return model.eval()


@dataclass(frozen=True)
class SwaResult:
    manifest: Manifest
    evaluation: Evaluation
    export_max_abs_diff: float

    def figures(self) -> dict[str, Any]:
        """What the main model's report says of it."""
        return {
            "model": self.manifest.name,
            "members_averaged": self.manifest.training["swa"]["members_averaged"],
            "error": 1 - self.evaluation.accuracy,
            "nll": self.evaluation.loss,
            "temperature": self.manifest.temperature,
        }


def write_swa_model(
    folder: ModelFolder,
    main: Manifest,
    network: nn.Module,
    copy: Normalized,
    input_shape: tuple[int, int, int],
    val: tuple[torch.Tensor, torch.Tensor],
    verify_batch: torch.Tensor,
    members: int,
    fit: bool,
) -> SwaResult:
    """Export the averaged `network` (through `copy`, a float32 CPU network of the same
    architecture), verify it, evaluate it on `val`, fit its temperature there (`fit`;
    else T = 1) and write it as a one-member model folder beside the main one."""
    copy.load_state_dict({k: v.float().cpu() for k, v in network.state_dict().items()})
    copy.eval()
    onnx_bytes = SnapshotExporter(copy, input_shape).export(copy)
    diff = verify_onnx(onnx_bytes, copy, verify_batch)
    evaluation = evaluate(copy, val[0].cpu(), val[1].cpu(), 1000, None)
    # Calibrated as a model of its own: the main run's record describes its ensemble.
    calibration = calibrate_one_model(evaluation.probs.numpy(), val[1].cpu().numpy(), fit)
    last = main.snapshots[-1]
    training = {
        **main.training,
        "calibration": calibration.describe(),
        "swa": {"of": main.name, "members_averaged": members},
    }
    folder.create(
        main.model_copy(
            update={
                "name": folder.name,
                "snapshots": [],
                "default_m": 1,
                "temperature": calibration.temperature,
                "state": "training",
                "training": training,
            }
        )
    )
    meta = SnapshotMeta(
        cycle=1,
        epoch=last.epoch,
        step=last.step,
        lr=last.lr,
        val_accuracy=evaluation.accuracy,
        val_nll=evaluation.loss,
    )
    folder.add_snapshot(onnx_bytes, meta, diff)
    return SwaResult(folder.finish(), evaluation, diff)
